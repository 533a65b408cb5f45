"""The local mailer: each review email is an `.eml` file in `OUT/outbox/` (the AWS runtime sends it with SES)."""

import os
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
        for attempt in range(1000):
            path = self.outbox / (f"{stem}.eml" if attempt == 0 else f"{stem}-{attempt}.eml")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as file:
                file.write(bytes(message))
            return str(path)
        raise FileExistsError(f"too many messages named {stem} in {self.outbox}")
