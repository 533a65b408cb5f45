"""The local mailer: each review email is an `.eml` file in `OUT/outbox/` (the AWS runtime sends it with SES)."""

import os
from email.message import EmailMessage
from pathlib import Path

from functions.adapters.local.files import FileStorage, file_uri


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
        # Each name is claimed with the storage's create-only write (a finished hidden file, hard-linked in): whoever
        # watches the outbox (a person, a mail pick-up, a test) never opens a message still being written, and no
        # message replaces another.
        storage, data = FileStorage([self.outbox]), bytes(message)
        for attempt in range(1000):
            path = self.outbox / (f"{stem}.eml" if attempt == 0 else f"{stem}-{attempt}.eml")
            if storage.write_new(file_uri(path), data, "message/rfc822"):
                return str(path)
        raise FileExistsError(f"too many messages named {stem} in {self.outbox}")
