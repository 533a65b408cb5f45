"""Brand LoRA training: `lora.train_lora` (one code path for tiny CPU, a local GPU and a SageMaker training job)."""
