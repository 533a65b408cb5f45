"""The local outbox: whoever watches `OUT/outbox/` (a person, a mail pick-up, a test's reviewer) only ever opens a
whole message, and no message is written over another."""

import threading
from email.message import EmailMessage
from pathlib import Path

from functions.adapters.local.outbox import OutboxMailer


def _message(review_id: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "3 images to review"
    message["X-Catalog-Review-Id"] = review_id
    # A large body, so that writing it takes a moment a watcher could fall into
    message.set_content("Open http://127.0.0.1:8000/review?r=abc\n" + "x" * 400_000)
    return message


def test_a_watcher_only_ever_reads_whole_messages(tmp_path):
    # Given a watcher that reads every message as soon as it appears in the outbox
    outbox = tmp_path / "outbox"
    expected = {f"r{number}": bytes(_message(f"r{number}")) for number in range(40)}
    seen: dict[str, bytes] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() or len(seen) < len(expected):
            for path in outbox.glob("*.eml") if outbox.is_dir() else ():
                if path.name not in seen:
                    seen[path.name] = path.read_bytes()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    # When the messages are sent
    mailer = OutboxMailer(outbox)
    names = {review_id: Path(mailer.send(_message(review_id))).name for review_id in expected}
    done.set()
    watcher.join(timeout=30)
    # Then every message the watcher read was whole, and nothing half-written is left behind
    assert {name: seen[name] for name in names.values()} == {names[r]: data for r, data in expected.items()}
    assert sorted(path.name for path in outbox.iterdir()) == sorted(names.values())


def test_a_second_message_with_the_same_id_gets_a_name_of_its_own(tmp_path):
    # Given a message already in the outbox
    mailer = OutboxMailer(tmp_path)
    first = Path(mailer.send(_message("r1")))
    # When another with the same review id is sent, Then it is written beside it, not over it
    second = Path(mailer.send(_message("r1")))
    assert (first.name, second.name) == ("review-r1.eml", "review-r1-1.eml")
    assert first.read_bytes() == second.read_bytes() == bytes(_message("r1"))
