"""What `catalog run` publishes to besides `OUT/approved/`: the brand's publishing profile, C2PA signing, a store.

- The brand's choices come from `<brands>/<brand>/publishing.json` (`schemas/publishing.py`), else the defaults.
- C2PA signing is on when `CATALOG_C2PA_CERT` and `CATALOG_C2PA_KEY` name a PEM certificate chain and its key.
- `--shopify-store acme.myshopify.com` publishes approved images to the store's products too; the Admin API token
  is read from the environment variable `--shopify-token-env` names (default `SHOPIFY_ADMIN_TOKEN`), never from a
  file in the repository or an argument that a shell history or process list would show.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from functions.errors import ConfigurationError, field_problems
from functions.stages.provenance import C2paSigning
from schemas.publishing import PublishingProfile

PUBLISHING_PROFILE_NAME = "publishing.json"
DEFAULT_TOKEN_ENV = "SHOPIFY_ADMIN_TOKEN"  # noqa: S105 (the variable's name, not a token)
C2PA_CERT_ENV, C2PA_KEY_ENV = "CATALOG_C2PA_CERT", "CATALOG_C2PA_KEY"


@dataclass(frozen=True)
class ShopifyStore:
    """A store to publish to: its domain (or a loopback test store) and the variable holding the Admin token."""

    store: str
    token_env: str = DEFAULT_TOKEN_ENV

    def token(self, environ: Mapping[str, str] = os.environ) -> str:
        token = environ.get(self.token_env, "")
        if not token:
            raise ConfigurationError(
                f"--shopify-store needs the Admin API access token in ${self.token_env}; it is not set"
            )
        return token


@dataclass(frozen=True)
class PublishingOptions:
    profile: PublishingProfile = field(default_factory=PublishingProfile)
    c2pa_signing: C2paSigning | None = None
    shopify: ShopifyStore | None = None


def load_publishing_profile(brands_dir: Path | None, brand: str) -> PublishingProfile:
    """`<brands>/<brand>/publishing.json`, or the defaults; a malformed file is a ConfigurationError naming fields."""
    if brands_dir is None:
        return PublishingProfile()
    path = brands_dir / brand / PUBLISHING_PROFILE_NAME
    if not path.is_file():
        return PublishingProfile()
    try:
        return PublishingProfile.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise ConfigurationError(f"{path} is not valid: {field_problems(error)}") from None


def c2pa_signing_from_env(environ: Mapping[str, str] = os.environ) -> C2paSigning | None:
    """Signing material named by `CATALOG_C2PA_CERT` and `CATALOG_C2PA_KEY`; both or neither."""
    cert, key = environ.get(C2PA_CERT_ENV), environ.get(C2PA_KEY_ENV)
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigurationError(f"C2PA signing needs both ${C2PA_CERT_ENV} and ${C2PA_KEY_ENV}")
    try:
        return C2paSigning.from_files(Path(cert), Path(key))
    except ValueError as error:
        raise ConfigurationError(str(error)) from None


def publishing_options(
    brands_dir: Path | None, brand: str, store: str | None, token_env: str = DEFAULT_TOKEN_ENV
) -> PublishingOptions:
    """Everything checked before the run starts: the profile parses, the signing files exist, the token is set."""
    shopify = None
    if store:
        from functions.adapters.shopify.admin import admin_base_url

        try:
            admin_base_url(store)
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        shopify = ShopifyStore(store, token_env)
        shopify.token()
    return PublishingOptions(load_publishing_profile(brands_dir, brand), c2pa_signing_from_env(), shopify)
