"""One self-contained module per GPU job kind, each with `run(request, registry) -> JobResult`.

The worker imports `gpu_jobs.recipes.<kind>` on first use (`lifestyle`, `ghost_mannequin`, `try_on`).
"""
