"""The GPU side: SageMaker async container, recipes (lifestyle, ghost mannequin, try-on), model loading.

Importing this package is light (no torch); `gpu_jobs.models` and the recipes import torch/diffusers.
"""
