"""`catalog backfill`: feed what is already in S3 through the normal flow."""


def backfill() -> None:
    """Backfill existing images (being built)."""
    raise NotImplementedError
