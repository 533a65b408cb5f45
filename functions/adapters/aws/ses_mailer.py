"""The AWS mailer: the raw MIME message through SES (only the digest function may send)."""

from email.message import EmailMessage
from typing import Any


class SesMailer:
    """Sends the raw MIME message with SES, so both parts arrive exactly as built."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def send(self, message: EmailMessage) -> str:
        recipients = [address.strip() for address in str(message["To"]).split(",") if address.strip()]
        response = self.client.send_raw_email(
            Source=str(message["From"]), Destinations=recipients, RawMessage={"Data": bytes(message)}
        )
        return str(response["MessageId"])
