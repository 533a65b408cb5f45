"""Review links: only an untouched, unexpired link signed with a listed key opens a review."""

import json
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.review.signing import (
    LinkParams,
    LinkRefusedError,
    SigningKeys,
    check_csrf,
    csrf_token,
    load_local_keys,
    new_review_id,
    sign_link,
    verify_link,
)

KEYS = SigningKeys.generate("k1")
NOW = 1_900_000_000
REVIEW_ID = "A" * 32
LINK = sign_link(KEYS, REVIEW_ID, NOW + 3600)


def _opens(keys: SigningKeys, review_id: str, fields: dict[str, str], now: float = NOW) -> bool:
    try:
        verify_link(keys, LinkParams.from_fields(review_id, fields), now)
    except LinkRefusedError:
        return False
    return True


def test_a_fresh_link_opens_and_carries_only_id_expiry_key_and_signature():
    # Given a signed link / When its query is read / Then it has exactly the three params and it verifies
    assert set(LINK.as_fields()) == {"e", "k", "s"}
    assert _opens(KEYS, REVIEW_ID, LINK.as_fields())


field_names = st.sampled_from(["review_id", "e", "k", "s"])
urlsafe_text = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60)


@settings(max_examples=300, deadline=None)
@given(field=field_names, replacement=st.one_of(urlsafe_text, st.text(max_size=60), st.integers(0, 10**12).map(str)))
def test_any_mutated_field_is_refused(field, replacement):
    # Given a valid link, When one of its parts is replaced by anything else
    fields = LINK.as_fields()
    review_id = REVIEW_ID
    original = review_id if field == "review_id" else fields[field]
    if replacement == original:
        return
    if field == "review_id":
        review_id = replacement
    else:
        fields[field] = replacement
    # Then the link is refused (unless the replacement is a later expiry with a re-made signature, which it is not)
    assert not _opens(KEYS, review_id, fields)


@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(0, 42),
    char=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
)
def test_any_single_character_change_in_the_signature_is_refused(position, char):
    fields = LINK.as_fields()
    signature = fields["s"]
    if signature[position] == char:
        return
    fields["s"] = signature[:position] + char + signature[position + 1 :]
    assert not _opens(KEYS, REVIEW_ID, fields)


def test_expired_links_are_refused_from_the_expiry_second_on():
    # Given a link expiring at T / Then it opens just before T and is refused at T and after
    assert _opens(KEYS, REVIEW_ID, LINK.as_fields(), now=LINK.expires - 1)
    assert not _opens(KEYS, REVIEW_ID, LINK.as_fields(), now=LINK.expires)
    assert not _opens(KEYS, REVIEW_ID, LINK.as_fields(), now=LINK.expires + 86400)


def test_extending_the_expiry_without_the_key_is_refused():
    fields = LINK.as_fields() | {"e": str(LINK.expires + 10**6)}
    assert not _opens(KEYS, REVIEW_ID, fields, now=LINK.expires + 10)


def test_rotation_keeps_old_links_working_and_refuses_unknown_keys():
    # Given a link signed with k1, When the keys rotate to k2
    rotated = KEYS.rotated("k2")
    new_link = sign_link(rotated, REVIEW_ID, NOW + 60)
    # Then the old link still opens, new links use k2, and a key id nobody lists is refused
    assert _opens(rotated, REVIEW_ID, LINK.as_fields())
    assert new_link.kid == "k2" and _opens(rotated, REVIEW_ID, new_link.as_fields())
    assert not _opens(KEYS, REVIEW_ID, new_link.as_fields())  # a server that never had k2
    retired = SigningKeys(active="k2", keys={"k2": rotated.keys["k2"]})
    assert not _opens(retired, REVIEW_ID, LINK.as_fields())  # k1 removed after its links expired


def test_csrf_token_is_bound_to_the_review_and_differs_from_the_signature():
    token = csrf_token(KEYS, LINK)
    other = sign_link(KEYS, "B" * 32, LINK.expires)
    assert check_csrf(KEYS, LINK, token)
    assert token != LINK.signature
    assert not check_csrf(KEYS, other, token)
    assert not check_csrf(KEYS, LINK, "")
    assert not check_csrf(KEYS, LINK, "é" * 43)  # non-ASCII input is refused, not an exception


def test_review_ids_are_long_random_and_urlsafe():
    ids = {new_review_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) >= 32 and LinkParams.from_fields(i, LINK.as_fields()) for i in ids)


def test_local_key_file_is_created_private_and_reused(tmp_path):
    # Given no key file / When keys are loaded twice / Then the file is 0600 and the same keys come back
    path = tmp_path / ".review" / "keys.json"
    first = load_local_keys(path)
    second = load_local_keys(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first == second


def test_weak_or_inconsistent_key_documents_are_refused():
    with pytest.raises(ValueError, match="at least"):
        SigningKeys(active="k1", keys={"k1": b"short"})
    with pytest.raises(ValueError, match="active"):
        SigningKeys(active="k9", keys={"k1": os.urandom(32)})
    with pytest.raises(ValueError, match="not a valid key document"):
        SigningKeys.from_json('{"active": "k1", "keys": {"k1": "not base64!"}}')


def test_the_flat_secret_that_secrets_manager_generates_is_accepted():
    # Given the shape the stack's generated secret has: a key id and 64 random characters
    from functions.review.signing import LinkRefusedError, SigningKeys, sign_link, verify_link

    flat = json.dumps({"active": "k1", "k1": "A" * 31 + "b" * 33})
    keys = SigningKeys.from_json(flat)
    # Then links sign and verify with it, and a too-short value is refused
    params = sign_link(keys, "r" * 32, expires=2_000_000_000)
    verify_link(keys, params, now=1_000_000_000)  # raises if refused
    with pytest.raises(LinkRefusedError):
        verify_link(SigningKeys.generate("k1"), params, now=1_000_000_000)
    with pytest.raises(ValueError, match="at least"):
        SigningKeys.from_json(json.dumps({"active": "k1", "k1": "short"}))


# -- issue 9 item 4: one key format, and rotation keeps the links already sent ------------------------------------


def _stack_generated_document() -> str:
    """What Secrets Manager stores at deploy: the stack's template plus its one generated field (hex characters)."""
    from cdk.catalog_infra.review import SIGNING_KEYS_GENERATED_FIELD, SIGNING_KEYS_TEMPLATE

    document = json.loads(SIGNING_KEYS_TEMPLATE)
    document[SIGNING_KEYS_GENERATED_FIELD] = "0123456789abcdef" * 4  # 64 characters from the hex alphabet
    return json.dumps(document)


LEGACY_FLAT = json.dumps({"active": "k1", "k1": "Ab3" * 21 + "x"})  # what the stack generated before: 64 characters


@pytest.mark.parametrize(
    "document",
    [_stack_generated_document, lambda: LEGACY_FLAT, lambda: SigningKeys.generate("k1").to_json()],
    ids=["stack-generated", "legacy-flat", "local-file"],
)
def test_a_link_signed_before_a_rotation_still_opens_after_it(document):
    from functions.review.signing import rotate_key_document

    # Given the secret as deployed (or as an older stack generated it), and a link signed with it
    before = document()
    link = sign_link(SigningKeys.from_json(before), REVIEW_ID, NOW + 3600)
    # When the keys are rotated with the documented step
    after = SigningKeys.from_json(rotate_key_document(before, "k2", created="2030-01-01T00:00:00Z"))
    # Then the link sent before still opens, and new links are signed with the new key
    assert _opens(after, REVIEW_ID, link.as_fields())
    assert after.active == "k2" and sign_link(after, REVIEW_ID, NOW + 60).kid == "k2"
    # And a second rotation, retiring the first key, keeps the second key's links
    second_link = sign_link(after, REVIEW_ID, NOW + 60)
    retired = SigningKeys.from_json(rotate_key_document(after.to_json(), "k3", retire=["k1"]))
    assert _opens(retired, REVIEW_ID, second_link.as_fields()) and not _opens(retired, REVIEW_ID, link.as_fields())


def test_the_key_document_is_one_list_form_with_the_encoding_in_each_field_name():
    # Given keys written by this code, Then the document lists entries, each naming its encoding
    document = json.loads(KEYS.rotated("k2").to_json())
    assert document["active"] == "k2" and isinstance(document["keys"], list)
    assert [entry["kid"] for entry in document["keys"]] == ["k1", "k2"]
    assert all(set(entry) == {"kid", "secret_b64", "created"} for entry in document["keys"])
    # And a document that could be read two ways is refused rather than guessed
    both = {"active": "k1", "keys": [{"kid": "k1", "secret_b64": "A" * 44, "secret_hex": "ab" * 32}]}
    bare = {"active": "k1", "keys": [{"kid": "k1", "secret": "x" * 64}]}
    twice = {"active": "k1", "keys": [{"kid": "k1", "secret_hex": "ab" * 32}, {"kid": "k1", "secret_hex": "cd" * 32}]}
    for bad in (both, bare, twice):
        with pytest.raises(ValueError, match="not a valid key document"):
            SigningKeys.from_json(json.dumps(bad))


def test_the_stack_generated_secret_is_its_hex_bytes():
    keys = SigningKeys.from_json(_stack_generated_document())
    assert keys.active == "k1" and keys.keys["k1"] == bytes.fromhex("0123456789abcdef" * 4)


def test_a_staged_key_is_listed_before_it_signs_and_the_command_line_never_prints_a_secret(capsys, monkeypatch):
    import io

    from functions.review.signing import main

    # Given the deployed document, When a key is staged with the command line
    monkeypatch.setattr("sys.stdin", io.StringIO(_stack_generated_document()))
    assert main(["rotate", "k2", "--stage"]) == 0
    staged = SigningKeys.from_json(capsys.readouterr().out)
    # Then k2 is listed (so links signed with it open everywhere) while k1 still signs
    assert staged.active == "k1" and set(staged.keys) == {"k1", "k2"}
    assert staged.keys["k1"] == bytes.fromhex("0123456789abcdef" * 4)
    # When it is activated, Then it signs
    monkeypatch.setattr("sys.stdin", io.StringIO(staged.to_json()))
    assert main(["activate", "k2"]) == 0
    assert SigningKeys.from_json(capsys.readouterr().out).active == "k2"
    # And a document it cannot read is an error that does not echo it
    secret_text = "do-not-print-" + "x" * 40
    monkeypatch.setattr(
        "sys.stdin", io.StringIO(json.dumps({"active": "k1", "keys": [{"kid": "k1", "secret": secret_text}]}))
    )
    assert main(["rotate", "k2"]) == 2
    captured = capsys.readouterr()
    assert secret_text not in captured.out + captured.err and "error" in captured.err
