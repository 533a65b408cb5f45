"""The AWS app: one construct per concern (storage, intake, workflow, gpu endpoint, review, monitoring), one stack.

It imports no runtime code: it points at folders (`functions/`, `gpu_jobs/`) and shares only environment variable
names with them.
"""
