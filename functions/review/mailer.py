"""The one email per batch: counts, a few thumbnails by link, one link. HTML and plain-text parts.

Sent with SES on AWS (`functions/adapters/aws/ses_mailer.py`); written as an `.eml` file to `OUT/outbox/` locally
(`functions/adapters/local/outbox.py`). The link is a capability, so the message
is built from the signed link only: no task token can reach it.
"""

from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from html import escape
from typing import Protocol

from schemas.review import ReviewItem, ReviewTask

MAX_THUMBNAILS = 4


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> str:
        """Send (or write) the message; returns where it went (a file path or a message id)."""
        ...


def build_review_email(
    task: ReviewTask,
    link: str,
    thumbnail_url: Callable[[ReviewItem], str],
    sender: str,
    *,
    pending: Sequence[ReviewItem] | None = None,
    reminder: bool = False,
) -> EmailMessage:
    """One message for the batch. `thumbnail_url` gives each preview's URL (never an attachment)."""
    waiting = list(task.items if pending is None else pending)
    flagged = sum(1 for item in waiting if item.flags)
    expires = task.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    count = f"{len(waiting)} image{'s' if len(waiting) != 1 else ''}"
    subject = f"{'Reminder: ' if reminder else ''}{count} to review for {task.brand} (link expires {expires})"
    lead = f"A reminder: {count} still wait for your review." if reminder else f"{count} are ready for your review."
    flag_line = (
        f"{flagged} of them have automatic-check warnings." if flagged else "No automatic check raised a warning."
    )

    text = (
        f"{lead}\n{flag_line}\n\nOpen the review page:\n{link}\n\n"
        f"The link expires {expires}. Opening it changes nothing; only your clicks on the page record decisions.\n"
        "Do not forward this email: anyone with the link can review this batch.\n"
    )
    thumbs = "".join(
        f'<td style="padding:4px"><img src="{escape(thumbnail_url(item))}" width="140" '
        f'alt="{escape(item.sku)}" style="display:block;border:1px solid #ddd;border-radius:4px"></td>'
        for item in waiting[:MAX_THUMBNAILS]
    )
    more = len(waiting) - MAX_THUMBNAILS
    html = (
        '<!doctype html><html><body style="font-family:system-ui,sans-serif;color:#1d1d1f">'
        f"<p>{escape(lead)}<br>{escape(flag_line)}</p>"
        f'<table role="presentation"><tr>{thumbs}</tr></table>'
        + (f"<p>…and {more} more.</p>" if more > 0 else "")
        + f'<p><a href="{escape(link)}" style="display:inline-block;padding:10px 16px;background:#16794c;'
        f'color:#fff;border-radius:6px;text-decoration:none">Open the review page</a></p>'
        f'<p style="color:#555;font-size:13px">The link expires {escape(expires)}. Opening it changes nothing. '
        "Do not forward this email: anyone with the link can review this batch.</p></body></html>"
    )

    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(task.reviewers)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["X-Catalog-Review-Id"] = task.review_id
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message
