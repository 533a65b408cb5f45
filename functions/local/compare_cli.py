"""`catalog compare`: run engines side by side on one prompt x product x seed set."""


def compare() -> None:
    """Compare models side by side (being built)."""
    raise NotImplementedError
