"""The local mailer: each review email is an `.eml` file in `OUT/outbox/` (the AWS runtime sends it with SES)."""

import os
import threading
from email.message import EmailMessage
from pathlib import Path


class OutboxMailer:
    """Writes each message as `<outbox>/<review id>[-reminder].eml`, never over an existing file. The messages hold
    the review link, so the folder is 0700 and each file 0600."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    def send(self, message: EmailMessage) -> str:
        self.outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.outbox, 0o700)  # also a folder an older version created 0755
        stem = f"review-{message['X-Catalog-Review-Id'] or 'message'}"  # ids may start with "-"
        if str(message["Subject"]).startswith("Reminder: "):
            stem += "-reminder"
        # Written whole under a hidden name first, then linked in under its own: whoever watches the outbox (a
        # person, a mail pick-up, a test) never opens a message that is still being written. A link, unlike a
        # rename, refuses a name that is taken.
        partial = self.outbox / f".{stem}.{os.getpid()}.{threading.get_ident()}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(bytes(message))
        try:
            for attempt in range(1000):
                path = self.outbox / (f"{stem}.eml" if attempt == 0 else f"{stem}-{attempt}.eml")
                try:
                    os.link(partial, path)
                except FileExistsError:
                    continue
                return str(path)
            raise FileExistsError(f"too many messages named {stem} in {self.outbox}")
        finally:
            partial.unlink(missing_ok=True)
