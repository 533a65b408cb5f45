"""Errors that end one file's processing with a stable code and a sentence a merchandiser can act on."""


class CatalogError(Exception):
    """A per-file failure. `code` is stable (tests and dashboards match on it); `message` names the file."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type["CatalogError"], tuple[str, str]]:
        # Keeps the code across process pools, which pickle exceptions.
        return (type(self), (self.code, self.message))


class IntakeError(CatalogError):
    """The file cannot be accepted as a product photo (format, size, corruption)."""


class BackgroundRemovalError(CatalogError):
    """No usable product mask could be made (e.g. nothing stands out from the backdrop)."""


class ConfigurationError(Exception):
    """A setting is wrong for the whole run (unknown model, missing weights). Stops the run before work starts."""
