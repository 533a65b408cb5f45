"""Signed review links: a random review id, an expiry, a key id and an HMAC-SHA256 signature. Nothing else.

The link is a capability: whoever holds it may review that batch until it expires. It never carries the workflow's
resume handle (the Step Functions task token), which stays server-side. Keys rotate: a link signed with any listed
key verifies, new links are signed with the active one.

Images get a narrower capability (`ImageParams`): an HMAC over another purpose string, scoped to one review, one
item and one image kind, with its own expiry. The email's thumbnails carry it, so a mail proxy that fetches them
holds something that opens those images and nothing else: the page and the decision POST refuse it.

The key document (`OUT/.review/keys.json` locally, the Secrets Manager secret on AWS) has one form, where each
secret names its encoding (see cdk/README.md, "Review link-signing keys"):

    {"active": "k2", "keys": [{"kid": "k1", "secret_b64": "...", "created": "..."},
                              {"kid": "k2", "secret_hex": "...", "created": "..."}]}

An entry may instead name a top-level field of the same document that holds its hex secret (`secret_hex_field`):
that is how the stack stores the secret Secrets Manager generates at deploy time, since a generated value can only
be a top-level field. Two older forms are still read, each with the one meaning it always had: the flat
`{"active": "k1", "k1": "<text>"}` a previous stack generated (the text's UTF-8 bytes are the key) and the
`{"active", "keys": {kid: "<base64>"}}` object older key files hold. Whatever is read is written back in the list
form (`rotate_key_document`), so the bytes, and the links signed with them, survive a rotation.
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

REVIEW_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")  # 22 urlsafe chars = 132 bits, the least we mint
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_SIGNATURE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # urlsafe base64 of 32 bytes, unpadded
_EXPIRES_PATTERN = re.compile(r"^[0-9]{1,12}$")
_LINK_PURPOSE = "catalog-review-link/v1"
_CSRF_PURPOSE = "catalog-review-csrf/v1"  # a separate purpose: a link signature is never a valid CSRF token
_IMAGE_PURPOSE = "catalog-review-image/v1"  # a separate purpose: an image capability never opens the page
IMAGE_KINDS = ("original", "generated", "preview")
MAX_ITEM_ID_CHARS = 256  # item ids are at most 128 characters; a digest batch page prefixes its member's index
MIN_KEY_BYTES = 32
_SECRET_FIELDS = ("secret_b64", "secret_hex", "secret_hex_field")
_ENTRY_FIELDS = frozenset({"kid", "created", *_SECRET_FIELDS})


class LinkRefusedError(Exception):
    """A link that is malformed, signed with an unknown key, tampered with or expired. `reason` is for logs only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SigningKeys:
    """Sign with `active`, verify with any listed key. `created` is informational (ISO time or "deploy")."""

    active: str
    keys: dict[str, bytes]
    created: dict[str, str] = field(default_factory=dict, compare=False)

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
        """The key document (module docstring): the list form, or one of the two older forms it replaces."""
        try:
            document: Any = json.loads(text)
            if not isinstance(document, dict):
                raise TypeError("expected a JSON object")
            if isinstance(document.get("keys"), list):
                return _from_list_form(document)
            if isinstance(document.get("keys"), dict):  # older key files: {"active", "keys": {kid: base64}}
                if set(document) != {"active", "keys"}:
                    raise ValueError("unexpected fields beside 'active' and 'keys'")
                keys = {str(kid): base64.b64decode(value, validate=True) for kid, value in document["keys"].items()}
                return cls(active=str(document["active"]), keys=keys)
            if "keys" in document:
                raise TypeError("'keys' must be a list of key entries")
            # The flat form a previous stack generated: {"active": "k1", "k1": "<text>"}; the text's bytes are the key.
            keys = {str(kid): _text(value, kid).encode() for kid, value in document.items() if kid != "active"}
            return cls(active=str(document["active"]), keys=keys)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as error:
            raise ValueError(f"review signing keys are not a valid key document: {error}") from error

    def to_json(self) -> str:
        """The list form, every secret base64-encoded under `secret_b64`."""
        entries = [
            {"kid": kid, "secret_b64": base64.b64encode(key).decode(), "created": self.created.get(kid, "")}
            for kid, key in self.keys.items()
        ]
        return json.dumps({"active": self.active, "keys": entries}, indent=2)

    @classmethod
    def generate(cls, kid: str = "k1", created: str | None = None) -> "SigningKeys":
        return cls(active=kid, keys={kid: secrets.token_bytes(MIN_KEY_BYTES)}, created={kid: created or _now_iso()})

    def rotated(
        self, new_kid: str, created: str | None = None, retire: Iterable[str] = (), activate: bool = True
    ) -> "SigningKeys":
        """A new key, active unless `activate` is False (staged: listed, so every server accepts it before any signs
        with it); the old ones stay listed (unless retired) so links already sent keep working."""
        if new_kid in self.keys:
            raise ValueError(f"key id {new_kid!r} is already used")
        retired = set(retire)
        unknown = retired - set(self.keys)
        if unknown:
            raise ValueError(f"cannot retire {sorted(unknown)}: not listed")
        keys = {kid: key for kid, key in self.keys.items() if kid not in retired}
        stamps = {kid: stamp for kid, stamp in self.created.items() if kid not in retired}
        keys[new_kid] = secrets.token_bytes(MIN_KEY_BYTES)
        stamps[new_kid] = created or _now_iso()
        return SigningKeys(active=new_kid if activate else self.active, keys=keys, created=stamps)

    def activated(self, kid: str) -> "SigningKeys":
        """Sign with `kid` (already listed) from now on."""
        if kid not in self.keys:
            raise ValueError(f"key id {kid!r} is not listed")
        return SigningKeys(active=kid, keys=self.keys, created=self.created)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name!r} must be a string")
    return value


def _from_list_form(document: dict[str, Any]) -> SigningKeys:
    """`{"active": kid, "keys": [{"kid", one of secret_b64 | secret_hex | secret_hex_field, "created"?}]}`."""
    keys: dict[str, bytes] = {}
    created: dict[str, str] = {}
    referenced: set[str] = set()
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            raise TypeError("each key entry must be an object")
        unexpected = set(entry) - _ENTRY_FIELDS
        if unexpected:
            raise ValueError(f"unexpected key entry fields {sorted(unexpected)}")
        kid = _text(entry.get("kid"), "kid")
        if kid in keys:
            raise ValueError(f"key id {kid!r} is listed twice")
        given = [name for name in _SECRET_FIELDS if name in entry]
        if len(given) != 1:
            raise ValueError(f"key {kid!r} needs exactly one of {', '.join(_SECRET_FIELDS)}")
        value = _text(entry[given[0]], given[0])
        if given[0] == "secret_b64":
            keys[kid] = base64.b64decode(value, validate=True)
        else:
            if given[0] == "secret_hex_field":
                if value in ("active", "keys"):
                    raise ValueError(f"key {kid!r} names the reserved field {value!r}")
                referenced.add(value)
                value = _text(document.get(value), value)
            if not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", value):
                raise ValueError(f"key {kid!r} is not hex")
            keys[kid] = bytes.fromhex(value)
        if "created" in entry:
            created[kid] = _text(entry["created"], "created")
    unexpected = set(document) - {"active", "keys"} - referenced
    if unexpected:
        raise ValueError(f"unexpected fields {sorted(unexpected)}")
    return SigningKeys(active=_text(document.get("active"), "active"), keys=keys, created=created)


def rotate_key_document(
    text: str | bytes,
    new_kid: str,
    *,
    created: str | None = None,
    retire: Sequence[str] = (),
    activate: bool = True,
) -> str:
    """The document with a fresh key `new_kid` (active unless `activate` is False), every listed key kept with its
    exact bytes (whichever form it was read from) unless retired, written in the list form. This is the rotation
    step: links sent before it verify after it, until their key is retired (after the longest link lifetime)."""
    return SigningKeys.from_json(text).rotated(new_kid, created, retire, activate).to_json()


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
    else:
        os.chmod(path.parent, 0o700)  # a folder made by an older version, 0755: it holds the key and the links
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


# -- image capabilities -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageParams:
    """What an image URL carries: `?e=<expiry>&k=<key id>&t=<signature>`, scoped to review, item and kind."""

    review_id: str
    item_id: str
    kind: str
    expires: int
    kid: str
    signature: str

    def query(self) -> str:
        return urlencode(self.as_fields())

    def as_fields(self) -> dict[str, str]:
        # `t`, not `s`: the page and the POST want `s` and find none; renamed to `s`, the other purpose fails its MAC.
        return {"e": str(self.expires), "k": self.kid, "t": self.signature}

    @classmethod
    def from_fields(cls, review_id: str, item_id: str, kind: str, fields: dict[str, str]) -> "ImageParams":
        expires, kid, signature = fields.get("e", ""), fields.get("k", ""), fields.get("t", "")
        if not REVIEW_ID_PATTERN.match(review_id):
            raise LinkRefusedError("malformed review id")
        if not 0 < len(item_id) <= MAX_ITEM_ID_CHARS:
            raise LinkRefusedError("malformed item id")
        if kind not in IMAGE_KINDS:
            raise LinkRefusedError("unknown image kind")
        if not _EXPIRES_PATTERN.match(expires):
            raise LinkRefusedError("malformed expiry")
        if not KEY_ID_PATTERN.match(kid):
            raise LinkRefusedError("malformed key id")
        if not _SIGNATURE_PATTERN.match(signature):
            raise LinkRefusedError("malformed signature")
        return cls(review_id, item_id, kind, int(expires), kid, signature)


def _image_canonical(review_id: str, item_id: str, kind: str, expires: int, kid: str) -> bytes:
    # The item id is percent-encoded: it is the one part not pattern-checked, and may not inject a separator.
    return f"{_IMAGE_PURPOSE}\n{review_id}\n{quote(item_id, safe='')}\n{kind}\n{expires}\n{kid}".encode()


def sign_image(keys: SigningKeys, review_id: str, item_id: str, kind: str, expires: int) -> ImageParams:
    if not REVIEW_ID_PATTERN.match(review_id):
        raise ValueError("review ids are 22-128 URL-safe characters")
    if kind not in IMAGE_KINDS or not 0 < len(item_id) <= MAX_ITEM_ID_CHARS:
        raise ValueError(f"no image capability for item {item_id!r}, kind {kind!r}")
    message = _image_canonical(review_id, item_id, kind, expires, keys.active)
    return ImageParams(review_id, item_id, kind, expires, keys.active, _mac(keys.keys[keys.active], message))


def verify_image(keys: SigningKeys, params: ImageParams, now: float) -> None:
    """Raise `LinkRefusedError` unless the image capability is signed with a listed key and has not expired."""
    key = keys.keys.get(params.kid)
    if key is None:
        raise LinkRefusedError("unknown key id")
    message = _image_canonical(params.review_id, params.item_id, params.kind, params.expires, params.kid)
    if not hmac.compare_digest(_mac(key, message), params.signature):
        raise LinkRefusedError("bad signature")
    if now >= params.expires:
        raise LinkRefusedError("expired")


# -- rotation from the command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m functions.review.signing rotate NEW_KID [--stage] [--retire KID ...] < current.json > next.json`,
    `... activate KID < current.json > next.json`, `... generate > keys.json`."""
    import argparse  # here: the review Lambdas import this module, and argparse costs ~3 ms of their cold start

    parser = argparse.ArgumentParser(prog="python -m functions.review.signing", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    rotate = commands.add_parser("rotate", help="add a new key, keeping (or retiring) the listed ones")
    rotate.add_argument("new_kid")
    rotate.add_argument("--retire", action="append", default=[], metavar="KID", help="drop a key (repeatable)")
    rotate.add_argument("--stage", action="store_true", help="list the new key without signing with it yet")
    activate = commands.add_parser("activate", help="sign with a listed key from now on")
    activate.add_argument("kid")
    commands.add_parser("generate", help="print a new document with one key, k1")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            print(SigningKeys.generate("k1").to_json())
        elif args.command == "activate":
            print(SigningKeys.from_json(sys.stdin.read()).activated(args.kid).to_json())
        else:
            document = sys.stdin.read()
            print(rotate_key_document(document, args.new_kid, retire=args.retire, activate=not args.stage))
    except ValueError as error:  # never echo the document: it is the secret
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
