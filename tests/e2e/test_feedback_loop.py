"""The learning loop end to end: a reviewer rejects a generated image in `catalog run --review local`, and the next
`catalog train dataset check --feedback` lists it in the brand's failure log, in `dataset.json` and in the report.
"""

import email
import email.policy
import html
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from functions.local.synthetic_photos import write_example_photos

pytestmark = pytest.mark.e2e


class RejectingReviewer(threading.Thread):
    """A person at the review page: opens the emailed link, rejects the first image as artefacts, approves the rest."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.rejected: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._review()
        except BaseException as error:  # reported by the test, which would otherwise only see the review expire
            self.error = error

    def _review(self) -> None:
        outbox = self.out / "outbox"
        deadline = time.monotonic() + 240
        while not list(outbox.glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.1)
        message = email.message_from_bytes(next(outbox.glob("*.eml")).read_bytes(), policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        link = next(line for line in text.splitlines() if line.startswith("http://127.0.0.1:"))
        page = urllib.request.urlopen(link, timeout=60).read().decode()
        fields = {
            name: html.unescape(value) for name, value in re.findall(r'name="(e|k|s|csrf)" value="([^"]*)"', page)
        }
        self.rejected = html.unescape(re.findall(r'name="item_id" value="([^"]+)"', page)[0])
        rejection = {"item_id": self.rejected, "verdict": "rejected", "reason": "artefacts", "note": "Seam smeared"}
        form = re.search(r'<form class="decision" method="post" action="([^"]+)"', page)
        assert form is not None, "no decision form on the review page"
        url = urllib.parse.urljoin(link, html.unescape(form.group(1)))
        for body in ({**fields, "decisions": [rejection]}, {**fields, "approve_all": True}):
            request = urllib.request.Request(
                url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
            )
            urllib.request.urlopen(request, timeout=60).read()


def catalog(*args: str | Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("catalog")
    command = [str(script) if script.exists() else "catalog", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_a_rejection_in_review_shows_up_in_the_next_dataset_check_as_a_failure_case(tmp_path):
    # Given acme's photos, two of them in a run waiting for a person's review on the loopback page
    photos, intake, out, brands = tmp_path / "photos", tmp_path / "intake", tmp_path / "out", tmp_path / "brands"
    write_example_photos(photos, size=(240, 320))
    for sku in ("TSHIRT-RED-001", "DRESS-SAGE-004"):
        shutil.copytree(photos / sku, intake / sku)
    brands.mkdir()
    reviewer = RejectingReviewer(out)
    reviewer.start()

    # When the reviewer rejects one packshot as artefacts and approves the rest
    run = catalog(
        "run", intake, "--out", out, "--brand", "acme", "--brands", brands, "--size", "256", "--workers", "1",
        "--review", "local", "--review-timeout", "240",
    )  # fmt: skip
    reviewer.join(timeout=60)
    assert reviewer.error is None, reviewer.error
    assert run.returncode == 0, run.stdout + run.stderr
    assert (out / "feedback" / "acme.jsonl").is_file()

    # And the next dataset check reads the brand's feedback
    dataset = tmp_path / "dataset"
    check = catalog(
        "train", "dataset", "check", photos, "--out", dataset, "--brand", "acme", "--trigger-token", "sks",
        "--min-side", "200", "--feedback", out,
    )  # fmt: skip

    # Then the rejection is a failure case, with its reason and note, in dataset.json and the report
    assert check.returncode == 0, check.stdout + check.stderr
    cases = json.loads((dataset / "dataset.json").read_text())["failure_cases"]
    assert [(c["item_id"], c["reason"], c["note"]) for c in cases] == [(reviewer.rejected, "artefacts", "Seam smeared")]
    report = (dataset / "report.html").read_text(encoding="utf-8")
    section = report.split('id="failure-artefacts"', 1)[1]
    assert "Seam smeared" in section and cases[0]["sku"] in section
    assert "Failure log: 1 rejected generated images (artefacts 1)" in " ".join((check.stderr + check.stdout).split())
