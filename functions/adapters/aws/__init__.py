"""Small AWS adapters the Lambda handlers share: settings from the environment, the intake ledger, the GPU job store,
S3 event parsing and the key layout. Light on purpose: nothing here imports an image or ML library.
"""
