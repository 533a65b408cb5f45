"""The review page in a real browser: `catalog run --review local`, the emailed link opened in Debian's chromium,
decisions by clicking and by keyboard, then the stored decisions, the published files and the feedback line.

Needs `/usr/bin/chromium` (CI: `apt-get install -y --no-install-recommends chromium`); skips cleanly without it.
"""

import json
import re
import subprocess
import sys
import threading
from email import message_from_bytes
from pathlib import Path

import pytest

from functions.adapters.local.review_store import SQLiteReviewStore
from functions.local.synthetic_photos import write_example_photos
from schemas.review import ReviewState, Verdict

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _start_review_run(tmp_path: Path) -> tuple[subprocess.Popen[str], str, Path, list[str]]:
    photos, out = tmp_path / "photos", tmp_path / "out"
    write_example_photos(photos)
    script = Path(sys.executable).with_name("catalog")
    process = subprocess.Popen(
        [
            str(script),
            "run",
            str(photos),
            "--out",
            str(out),
            "--size",
            "400",
            "--workers",
            "2",
            "--review",
            "local",
            "--review-timeout",
            "300",
            "--reviewer",
            "merch@brand.example.com",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    link: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            match = re.search(r"http://127\.0\.0\.1:\d+/review/\S+", line)
            if match and not link:
                link.append(match.group(0))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(300):
        process.kill()
        pytest.fail("no review link printed:\n" + "".join(lines))
    return process, link[0], out, lines


def test_reviewer_approves_and_rejects_in_chromium(browser, tmp_path):
    # Given a run waiting for review, and the link in its emailed .eml
    process, printed_link, out, lines = _start_review_run(tmp_path)
    try:
        eml = next((out / "outbox").glob("*.eml"))
        message = message_from_bytes(eml.read_bytes())
        text = next(p for p in message.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
        assert printed_link in text and "5 images are ready" in text

        # When the reviewer opens the emailed link (phone width first, then desktop)
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(printed_link)
        phone.wait_for_selector(".item")
        ARTIFACTS.mkdir(exist_ok=True)
        phone.screenshot(path=str(ARTIFACTS / "review-phone-390.png"), full_page=False)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        phone.close()

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(printed_link)
        cards = page.locator("article.item")
        assert cards.count() == 5
        ids = [cards.nth(i).get_attribute("data-item-id") for i in range(5)]
        assert all(page.locator(f"#item-{i} img").first.evaluate("img => img.naturalWidth") > 0 for i in ids[:2])
        page.screenshot(path=str(ARTIFACTS / "review-desktop-before.png"), full_page=True)

        # ...approves the first by clicking
        page.locator(f"#item-{ids[0]} button.approve").click()
        page.wait_for_selector(f"#item-{ids[0]}[data-state=approved]")
        # ...rejects the second with a reason and a note, by clicking
        page.locator(f"#item-{ids[1]} select[name=reason]").select_option("wrong_colour")
        page.locator(f"#item-{ids[1]}").get_by_label("Note (optional)").fill("Too orange next to the original.")
        page.locator(f"#item-{ids[1]} button.reject").click()
        page.wait_for_selector(f"#item-{ids[1]}[data-state=rejected]")
        # ...approves the third with the keyboard (focus moved on to it after the rejection)
        page.wait_for_function(f"document.activeElement && document.activeElement.id === 'item-{ids[2]}'")
        page.keyboard.press("a")
        page.wait_for_selector(f"#item-{ids[2]}[data-state=approved]")
        # ...opens the shortcut help with "?" and closes it
        page.keyboard.press("?")
        assert page.locator("dialog#help").evaluate("d => d.open")
        page.keyboard.press("Escape")
        page.screenshot(path=str(ARTIFACTS / "review-desktop-decided-three.png"), full_page=True)
        # ...and approves the rest in one go
        page.get_by_role("button", name=re.compile("Approve all remaining")).click()
        page.wait_for_selector(".state[data-state=decided]")
        summary = page.locator("#summary").inner_text()
        page.screenshot(path=str(ARTIFACTS / "review-desktop-done.png"), full_page=True)
        print(f"\nreview screenshots: {ARTIFACTS}")

        # Then the run finishes by itself (the batch is decided), exit status about processing only
        assert process.wait(timeout=60) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
    assert summary == "0 pending, 4 approved, 1 rejected."
    assert errors == []

    # And the store holds each decision with the emailed address as reviewer
    store = SQLiteReviewStore(out / ".review" / "reviews.sqlite")
    review = store.latest()
    assert review.state is ReviewState.DECIDED
    assert review.decisions[ids[1]].verdict is Verdict.REJECTED and review.decisions[ids[1]].reason == "wrong_colour"
    assert {d.reviewer for d in review.decisions.values()} == {"merch@brand.example.com"}

    # And only approved packshots are published; the rejection is a feedback line
    rejected_item = review.item(ids[1])
    published = sorted(p.relative_to(out / "approved").as_posix() for p in (out / "approved").rglob("*.jpg"))
    assert len(published) == 4 and rejected_item.generated not in published
    feedback = [json.loads(line) for line in (out / "feedback" / "default.jsonl").read_text().splitlines()]
    assert len(feedback) == 1
    assert feedback[0]["reason"] == "wrong_colour" and feedback[0]["note"] == "Too orange next to the original."
    assert feedback[0]["reviewer"] == "merch@brand.example.com" and feedback[0]["engine"] == "backdrop"
    assert feedback[0]["content_sha256"] and feedback[0]["seed"] is None
    assert "4 approved, 1 rejected" in "".join(lines)
