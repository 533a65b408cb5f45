"""`catalog run --runtime aws-sim`: the AWS flow itself on this machine (moto, the synthesized state machine, the real
handlers, the in-process GPU worker for the endpoint), driven through the CLI in-process on the example photos.

The stack is synthesized once per test session (cached in the process); each run gets a fresh moto.
"""

import email
import email.policy
import html
import json
import re
import shutil
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from functions.local.cli import app
from functions.local.synthetic_photos import write_example_photos
from functions.stages.provenance import ALGORITHMICALLY_ENHANCED
from tests.conftest import tree_digest

pytestmark = pytest.mark.e2e

for _module in ("moto", "aws_cdk", "cdk_nag"):
    pytest.importorskip(_module)
if shutil.which("node") is None:
    pytest.skip("the CDK synthesizes through node, which is not installed", allow_module_level=True)

PHOTO_SIZE = (300, 400)  # small photos keep the flow quick; the packshot is 256 px
AUTO_REVIEWER = "auto (no person reviewed)"


def catalog_sim(input_dir: Path, out: Path, *args: str) -> Result:
    """`catalog run INPUT --out OUT --runtime aws-sim ...` in this process."""
    command = ["run", str(input_dir), "--out", str(out), "--size", "256", "--runtime", "aws-sim", *args]
    result = CliRunner().invoke(app, command)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a crash, not an exit status: show its traceback
    return result


def manifest_entries(out: Path) -> dict[str, dict]:
    return {entry["source"]: entry for entry in json.loads((out / "manifest.json").read_text())["entries"]}


def published_lines(out: Path) -> list[dict]:
    path = out / "published.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def example_photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("intake")
    write_example_photos(root, size=PHOTO_SIZE)
    return root


@pytest.fixture(scope="module")
def auto_run(example_photos, tmp_path_factory) -> tuple[Result, Path]:
    out = tmp_path_factory.mktemp("out-auto")
    return catalog_sim(example_photos, out, "--review", "auto"), out


def test_every_photo_goes_through_the_aws_flow_and_is_published(auto_run, example_photos):
    # Given the example intake folder (SKU folders with product.json, one loose photo)
    result, out = auto_run

    # When it runs through the AWS flow with the automatic review (the fixture)

    # Then every photo succeeded, one entry each, with the stable fields the local runtime writes
    assert result.exit_code == 0, result.output
    entries = manifest_entries(out)
    photos = sorted(p.relative_to(example_photos).as_posix() for p in example_photos.rglob("*.jpg"))
    assert sorted(entries) == photos
    for entry in entries.values():
        assert entry["status"] == "succeeded" and entry["error"] is None, entry
        assert all((out / path).is_file() for path in entry["outputs"].values())
        assert entry["review_items"] and entry["settings_fingerprint"]
    # And approved/ holds one packshot per photo: the pixels of the packshot in its entry, marked as an algorithmic
    # edit (IPTC Digital Source Type in XMP), with no EXIF
    for entry in entries.values():
        name = entry["review_items"][0]["details"]["publish_name"]
        published = Image.open(out / "approved" / name)
        packshot = Image.open(out / entry["outputs"]["packshot"])
        assert published.tobytes() == packshot.tobytes() and published.size == packshot.size
        assert ALGORITHMICALLY_ENHANCED in published.info["xmp"].decode() and not published.getexif()
    # And published.jsonl carries each object's S3 user metadata: its provenance and who approved it
    lines = published_lines(out)
    assert len(lines) == len(entries)
    by_sha = {entry["content_sha256"] for entry in entries.values()}
    for line in lines:
        assert line["path"].startswith("approved/") and line["content_type"] == "image/jpeg"
        assert line["metadata"]["approved-by"] == AUTO_REVIEWER
        assert line["metadata"]["job-kind"] == "packshot" and line["metadata"]["source-sha256"] in by_sha
    # And the digest email SES sent is in the outbox, one link for the batch
    emails = list((out / "outbox").glob("*.eml"))
    assert len(emails) == 1
    message = email.message_from_bytes(emails[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == "reviewer@example.com"
    assert f"{len(entries)} images to review" in message["Subject"]
    # And the run summary says the review was automatic
    assert "decided automatically" in result.output


def test_bad_files_fail_with_their_codes_while_the_rest_publish(example_photos, tmp_path):
    # Given two good photos, a corrupt (cut short) JPEG and a zero-byte file
    intake = tmp_path / "intake"
    for sku in ("TSHIRT-RED-001", "DRESS-SAGE-004"):
        shutil.copytree(example_photos / sku, intake / sku)
    bad = intake / "BAD-FILES"
    bad.mkdir()
    good_jpeg = (intake / "TSHIRT-RED-001" / "front.jpg").read_bytes()
    (bad / "cut-short.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    (bad / "empty.jpg").write_bytes(b"")
    before = tree_digest(intake)

    # When the batch runs through the AWS flow
    out = tmp_path / "out"
    result = catalog_sim(intake, out, "--review", "auto")

    # Then the run says some failed
    assert result.exit_code == 1, result.output
    entries = manifest_entries(out)
    # And each bad file failed alone, with its stable code and a message naming it
    for source, code in {"BAD-FILES/cut-short.jpg": "truncated_image", "BAD-FILES/empty.jpg": "empty_file"}.items():
        entry = entries[source]
        assert (entry["status"], entry["error"]["code"]) == ("failed", code), entry
        assert Path(source).name in entry["error"]["message"] and "s3://" not in entry["error"]["message"]
        assert entry["outputs"] == {}
    # And the good photos were published
    assert [e["status"] for s, e in entries.items() if not s.startswith("BAD")] == ["succeeded", "succeeded"]
    assert sorted(p.relative_to(out / "approved").as_posix() for p in (out / "approved").rglob("*.jpg")) == [
        "DRESS-SAGE-004/front.packshot.jpg",
        "TSHIRT-RED-001/front.packshot.jpg",
    ]
    # And the originals are untouched
    assert tree_digest(intake) == before


class ScriptedReviewer(threading.Thread):
    """A person at the review page: opens the emailed link, loads an image, rejects one item, approves the rest."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.rejected: str | None = None
        self.image: bytes = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._review()
        except BaseException as error:  # reported by the test, which would otherwise only see the review expire
            self.error = error

    def _review(self) -> None:
        outbox = self.out / "outbox"
        while not list(outbox.glob("*.eml")):
            time.sleep(0.1)  # the run ends the review at its timeout if the email never comes
        message = email.message_from_bytes(next(outbox.glob("*.eml")).read_bytes(), policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",)).get_content()
        link = next(line for line in text.splitlines() if line.startswith("http://127.0.0.1:"))
        page = urllib.request.urlopen(link, timeout=60).read().decode()
        # The images are presigned S3 URLs a browser can load
        self.image = urllib.request.urlopen(html.unescape(re.findall(r'<img[^>]+src="([^"]+)"', page)[0])).read()
        fields = {
            name: html.unescape(value) for name, value in re.findall(r'name="(e|k|s|csrf)" value="([^"]*)"', page)
        }
        self.rejected = html.unescape(re.findall(r'name="item_id" value="([^"]+)"', page)[0])
        decisions = [{"item_id": self.rejected, "verdict": "rejected", "reason": "wrong_colour"}]
        action = html.unescape(re.search(r'<form class="decision" method="post" action="([^"]+)"', page).group(1))
        url = urllib.parse.urljoin(link, action)
        for body in ({**fields, "decisions": decisions}, {**fields, "approve_all": True}):
            request = urllib.request.Request(
                url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
            )
            urllib.request.urlopen(request, timeout=60).read()


def test_local_review_serves_the_real_review_api_and_publishes_the_decisions(example_photos, tmp_path):
    # Given two photos, and a reviewer who will open the emailed link
    intake = tmp_path / "intake"
    for sku in ("TSHIRT-RED-001", "DRESS-SAGE-004"):
        shutil.copytree(example_photos / sku, intake / sku)
    out = tmp_path / "out"
    reviewer = ScriptedReviewer(out)
    reviewer.start()

    # When the run waits for the decisions on the loopback review API
    result = catalog_sim(intake, out, "--review", "local", "--review-timeout", "300")
    reviewer.join(timeout=60)

    # Then the reviewer saw the page and its images (a JPEG or PNG from the sim's S3 endpoint)
    assert reviewer.error is None, reviewer.error
    assert reviewer.image[:3] == b"\xff\xd8\xff" or reviewer.image[:4] == b"\x89PNG"
    # And the rejected image became a feedback line, the approved one was published
    assert result.exit_code == 0, result.output
    entries = manifest_entries(out)
    items = {i["item_id"]: i for e in entries.values() for i in e["review_items"]}
    rejected = items[reviewer.rejected]
    feedback = [json.loads(line) for line in (out / "feedback" / "default.jsonl").read_text().splitlines()]
    assert [(f["item_id"], f["verdict"], f["reason"]) for f in feedback] == [
        (reviewer.rejected, "rejected", "wrong_colour")
    ]
    published = sorted(line["path"] for line in published_lines(out))
    expected = sorted(f"approved/{i['details']['publish_name']}" for i in items.values() if i is not rejected)
    assert published == expected and len(expected) == 1
    assert not (out / "approved" / rejected["details"]["publish_name"]).exists()
    # And the decisions were recorded as the person's, not the automatic reviewer's
    assert published_lines(out)[0]["metadata"]["approved-by"] == "reviewer@example.com"


def test_a_missing_extra_names_the_install_command(example_photos, tmp_path, monkeypatch):
    # Given a machine without moto
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "moto" else real_find_spec(name, *a)
    )

    # When the AWS flow is asked for
    result = catalog_sim(example_photos, tmp_path / "out", "--review", "none")

    # Then the run stops before any work, saying what to install
    assert result.exit_code == 2
    assert "pip install -e '.[aws-sim]'" in " ".join(result.output.split())
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_the_sim_leaves_the_process_as_it_found_it(auto_run):
    # Given a finished aws-sim run in this process (the fixture)
    import os

    from functions.adapters.aws import clients, settings

    # When the process's environment and the handlers' caches are read afterwards

    # Then nothing the sim set is left behind: no fake credentials, S3 endpoint, stack variables or cached clients
    assert os.environ.get("AWS_ACCESS_KEY_ID") != "aws-sim"
    assert not any(name in os.environ for name in ("AWS_ENDPOINT_URL_S3", "WORK_BUCKET", "STATE_MACHINE_ARN"))
    assert settings.load.cache_info().currsize == 0 and clients.client.cache_info().currsize == 0
