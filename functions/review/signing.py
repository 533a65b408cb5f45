"""Signed review links: a random review id, an expiry, a key id and an HMAC-SHA256 signature. Nothing else.

The link is a capability: whoever holds it may review that batch until it expires. It never carries the workflow's
resume handle (the Step Functions task token), which stays server-side. Keys rotate: a link signed with any listed
key verifies, new links are signed with the active one.
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

REVIEW_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")  # 22 urlsafe chars = 132 bits, the least we mint
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_SIGNATURE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # urlsafe base64 of 32 bytes, unpadded
_EXPIRES_PATTERN = re.compile(r"^[0-9]{1,12}$")
_LINK_PURPOSE = "catalog-review-link/v1"
_CSRF_PURPOSE = "catalog-review-csrf/v1"  # a separate purpose: a link signature is never a valid CSRF token
MIN_KEY_BYTES = 32


class LinkRefusedError(Exception):
    """A link that is malformed, signed with an unknown key, tampered with or expired. `reason` is for logs only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SigningKeys:
    """`{"active": "k2", "keys": {"k1": "<base64>", "k2": "<base64>"}}`: sign with `active`, verify with any."""

    active: str
    keys: dict[str, bytes]

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ValueError(f"the active key {self.active!r} is not among the listed keys")
        for kid, key in self.keys.items():
            if not KEY_ID_PATTERN.match(kid):
                raise ValueError(f"key id {kid!r} must be 1-32 letters, digits, '-' or '_'")
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"key {kid!r} is {len(key)} bytes; review links need at least {MIN_KEY_BYTES}")

    @classmethod
    def from_json(cls, text: str | bytes) -> "SigningKeys":
        """The `{"active", "keys": {kid: base64}}` document, or the flat `{"active": "k1", "k1": "<random text>"}` that
        Secrets Manager generates at deploy time (the text itself is the key material)."""
        try:
            document: Any = json.loads(text)
            if "keys" in document:
                keys = {str(kid): base64.b64decode(value, validate=True) for kid, value in document["keys"].items()}
            else:
                keys = {str(kid): str(value).encode() for kid, value in document.items() if kid != "active"}
            return cls(active=str(document["active"]), keys=keys)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as error:
            raise ValueError(f"review signing keys are not a valid key document: {error}") from error

    def to_json(self) -> str:
        encoded = {kid: base64.b64encode(key).decode() for kid, key in self.keys.items()}
        return json.dumps({"active": self.active, "keys": encoded}, indent=2)

    @classmethod
    def generate(cls, kid: str = "k1") -> "SigningKeys":
        return cls(active=kid, keys={kid: secrets.token_bytes(MIN_KEY_BYTES)})

    def rotated(self, new_kid: str) -> "SigningKeys":
        """A new active key; the old ones stay listed so links already sent keep working until they expire."""
        if new_kid in self.keys:
            raise ValueError(f"key id {new_kid!r} is already used")
        return SigningKeys(active=new_kid, keys={**self.keys, new_kid: secrets.token_bytes(MIN_KEY_BYTES)})


def load_local_keys(path: Path) -> SigningKeys:
    """The local key file, created (mode 0600, never overwritten) with one fresh key when missing."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return SigningKeys.from_json(path.read_bytes())
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(SigningKeys.generate().to_json())
    return SigningKeys.from_json(path.read_bytes())


def load_secrets_manager_keys(client: Any, secret_id: str) -> SigningKeys:
    """The key document stored as a Secrets Manager secret string."""
    return SigningKeys.from_json(client.get_secret_value(SecretId=secret_id)["SecretString"])


def new_review_id() -> str:
    """192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class LinkParams:
    """What a review link carries besides the id in its path: `?e=<expiry>&k=<key id>&s=<signature>`."""

    review_id: str
    expires: int
    kid: str
    signature: str

    def query(self) -> str:
        return urlencode({"e": self.expires, "k": self.kid, "s": self.signature})

    def as_fields(self) -> dict[str, str]:
        return {"e": str(self.expires), "k": self.kid, "s": self.signature}

    @classmethod
    def from_fields(cls, review_id: str, fields: dict[str, str]) -> "LinkParams":
        """Parse untrusted input strictly; anything unexpected is a refusal, not a guess."""
        expires, kid, signature = fields.get("e", ""), fields.get("k", ""), fields.get("s", "")
        if not REVIEW_ID_PATTERN.match(review_id):
            raise LinkRefusedError("malformed review id")
        if not _EXPIRES_PATTERN.match(expires):
            raise LinkRefusedError("malformed expiry")
        if not KEY_ID_PATTERN.match(kid):
            raise LinkRefusedError("malformed key id")
        if not _SIGNATURE_PATTERN.match(signature):
            raise LinkRefusedError("malformed signature")
        return cls(review_id=review_id, expires=int(expires), kid=kid, signature=signature)


def _canonical(review_id: str, expires: int, kid: str) -> bytes:
    # Newline-separated and each part pattern-checked: no two different triples give the same string.
    return f"{_LINK_PURPOSE}\n{review_id}\n{expires}\n{kid}".encode()


def _mac(key: bytes, message: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).rstrip(b"=").decode()


def sign_link(keys: SigningKeys, review_id: str, expires: int) -> LinkParams:
    if not REVIEW_ID_PATTERN.match(review_id):
        raise ValueError("review ids are 22-128 URL-safe characters")
    key = keys.keys[keys.active]
    return LinkParams(review_id, expires, keys.active, _mac(key, _canonical(review_id, expires, keys.active)))


def verify_link(keys: SigningKeys, params: LinkParams, now: float) -> None:
    """Raise `LinkRefusedError` unless the signature is right for a listed key and the link has not expired."""
    key = keys.keys.get(params.kid)
    if key is None:
        raise LinkRefusedError("unknown key id")
    expected = _mac(key, _canonical(params.review_id, params.expires, params.kid))
    if not hmac.compare_digest(expected, params.signature):
        raise LinkRefusedError("bad signature")
    # Checked after the signature so that an attacker learns nothing from the order of the checks.
    if now >= params.expires:
        raise LinkRefusedError("expired")


def csrf_token(keys: SigningKeys, params: LinkParams) -> str:
    """Bound to the review and the link's key (so rotating the active key does not break an open page)."""
    key = keys.keys.get(params.kid)
    if key is None:
        raise LinkRefusedError("unknown key id")
    return _mac(key, f"{_CSRF_PURPOSE}\n{params.review_id}".encode())


def check_csrf(keys: SigningKeys, params: LinkParams, token: str) -> bool:
    # Bytes: compare_digest refuses non-ASCII str, and a token comes from the request.
    return hmac.compare_digest(csrf_token(keys, params).encode(), (token or "").encode("utf-8", "replace"))
