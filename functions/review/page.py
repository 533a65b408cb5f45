"""The review page and the small pages around it, as strings, plus the headers every review response carries.

Plain HTML: every form works without JavaScript; `review.js` (served as a file, no inline script, so the content
security policy can forbid inline code) adds in-place updates and keyboard shortcuts. Everything that comes from a
file name, a sidecar or a reviewer's note is escaped.
"""

from collections.abc import Callable, Iterable
from html import escape
from importlib.resources import files

from functions.review.store import StoredReview
from schemas.checks import Severity
from schemas.review import RejectionReason, ReviewDecision, ReviewItem, ReviewState, Verdict

STATIC_FILES = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}

REASON_LABELS: dict[RejectionReason, str] = {
    RejectionReason.WRONG_COLOUR: "Wrong colour",
    RejectionReason.FABRIC_TEXTURE: "Fabric or texture wrong",
    RejectionReason.BODY_PROPORTIONS: "Body proportions",
    RejectionReason.ARTEFACTS: "Artefacts",
    RejectionReason.OFF_BRAND: "Off-brand",
    RejectionReason.PRODUCT_ALTERED: "Product altered",
    RejectionReason.OTHER: "Other (say why in the note)",
}

ImageUrl = Callable[[ReviewItem, str], str]  # (item, "original" | "generated") -> URL


def static_file(name: str) -> bytes:
    """The bytes of `review.js` / `review.css`, shipped as package data."""
    if name not in STATIC_FILES:
        raise FileNotFoundError(name)
    return files("functions.review").joinpath("static").joinpath(name).read_bytes()


def security_headers(
    image_origins: Iterable[str] = (), content_type: str = "text/html; charset=utf-8"
) -> dict[str, str]:
    """Headers for every review response. Images may come from this origin and the given (presigned S3) origins."""
    img_src = " ".join(["'self'", *sorted(set(image_origins))])
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {img_src}; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Type": content_type,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }


def _page(title: str, body: str, static_base: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{escape(title)}</title>"
        f'<link rel="stylesheet" href="{escape(static_base)}/review.css">'
        f'<script src="{escape(static_base)}/review.js" defer></script>'
        f"</head><body>{body}</body></html>"
    )


def render_message_page(title: str, message: str, static_base: str) -> str:
    """A refusal or a closed review: says what happened and what to do, names nothing secret."""
    return _page(
        title,
        f'<main class="message"><h1>{escape(title)}</h1><p>{escape(message)}</p></main>',
        static_base,
    )


def describe_decision(decision: ReviewDecision) -> str:
    when = decision.decided_at.strftime("%Y-%m-%d %H:%M UTC")
    what = "Approved" if decision.verdict is Verdict.APPROVED else "Rejected"
    if decision.reason is not None:
        what += f" ({REASON_LABELS[decision.reason]})"
    return f"{what} by {decision.reviewer} at {when}"


def _hidden(fields: dict[str, str]) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items())


def _flags(item: ReviewItem) -> str:
    if not item.flags:
        return '<p class="flags-none">No automatic check raised a warning.</p>'
    entries = "".join(
        f'<li class="{"warning" if flag.severity is Severity.WARNING else "info"}">'
        f"<strong>{'Warning' if flag.severity is Severity.WARNING else 'Note'}:</strong> {escape(flag.message)} "
        f"<code>{escape(flag.code)}</code></li>"
        for flag in item.flags
    )
    return f'<ul class="flags" aria-label="Automatic checks">{entries}</ul>'


def _decision_form(item: ReviewItem, action: str, hidden: str) -> str:
    dom_id = escape(item.item_id)
    options = '<option value="">Choose a reason…</option>' + "".join(
        f'<option value="{reason.value}">{escape(label)}</option>' for reason, label in REASON_LABELS.items()
    )
    return (
        f'<form class="decision" method="post" action="{escape(action)}">{hidden}'
        f'<input type="hidden" name="item_id" value="{dom_id}">'
        f"<fieldset><legend>Decision for {escape(item.sku)}</legend>"
        '<button type="submit" name="verdict" value="approved" class="approve" formnovalidate>'
        "Approve <kbd>a</kbd></button>"
        f'<div class="reject-fields"><label for="reason-{dom_id}">Reason for rejecting</label>'
        f'<select id="reason-{dom_id}" name="reason" required>{options}</select>'
        f'<label for="note-{dom_id}">Note (optional)</label>'
        f'<textarea id="note-{dom_id}" name="note" maxlength="2000" rows="2"></textarea></div>'
        '<button type="submit" name="verdict" value="rejected" class="reject">Reject <kbd>r</kbd></button>'
        "</fieldset></form>"
    )


def _item(
    item: ReviewItem, decision: ReviewDecision | None, open_: bool, image_url: ImageUrl, action: str, hidden: str
) -> str:
    dom_id = escape(item.item_id)
    state = decision.verdict.value if decision else "pending"
    status = (
        f'<p class="status {state}" role="status">{escape(describe_decision(decision))}</p>'
        if decision
        else '<p class="status" role="status"></p>'
    )
    form = _decision_form(item, action, hidden) if decision is None and open_ else ""
    source = f" — {escape(item.details.source)}" if item.details.source else ""
    # The checkerboard shows transparency; behind a JPEG it would only frame the image with noise.
    checker = ' class="checker"' if item.generated.lower().endswith((".png", ".webp")) else ""
    return (
        f'<article class="item" id="item-{dom_id}" data-item-id="{dom_id}" data-state="{state}" tabindex="-1" '
        f'aria-labelledby="title-{dom_id}">'
        f'<h2 id="title-{dom_id}">{escape(item.sku)} <span class="kind">{escape(item.job_kind)}</span>'
        f'<span class="source">{source}</span></h2>'
        '<div class="pair">'
        f'<figure><img src="{escape(image_url(item, "original"))}" alt="Original photo of {escape(item.sku)}">'
        "<figcaption>Original</figcaption></figure>"
        f'<figure><a href="{escape(image_url(item, "generated"))}" target="_blank" rel="noopener noreferrer">'
        f'<img{checker} src="{escape(image_url(item, "generated"))}" '
        f'alt="Generated {escape(item.job_kind)} of {escape(item.sku)}"></a>'
        f"<figcaption>Generated ({escape(item.job_kind)})</figcaption></figure>"
        "</div>" + _flags(item) + status + form + "</article>"
    )


def render_review_page(
    review: StoredReview,
    *,
    link_fields: dict[str, str],
    csrf: str,
    action: str,
    static_base: str,
    image_url: ImageUrl,
    notice: str | None = None,
) -> str:
    """The whole batch: one card per item with original and generated side by side."""
    task = review.task
    open_ = review.state is ReviewState.PENDING
    hidden = _hidden({**link_fields, "csrf": csrf})
    approved = sum(d.verdict is Verdict.APPROVED for d in review.decisions.values())
    rejected = len(review.decisions) - approved
    pending = len(task.items) - len(review.decisions)
    expires = task.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    state_line = {
        ReviewState.PENDING: f"This link expires {expires}.",
        ReviewState.DECIDED: "Every image is decided; thank you. The workflow has been told.",
        ReviewState.EXPIRED: "This review expired; its owner can re-issue a link for the pending images.",
    }[review.state]
    approve_all = (
        f'<form class="approve-all" method="post" action="{escape(action)}">{hidden}'
        '<input type="hidden" name="approve_all" value="1">'
        f'<button type="submit">Approve all remaining ({pending})</button></form>'
        if open_ and pending
        else ""
    )
    header = (
        f"<header><h1>Review {len(task.items)} image{'s' if len(task.items) != 1 else ''} for {escape(task.brand)}</h1>"
        f'<p id="summary" aria-live="polite" data-pending="{pending}" data-approved="{approved}" '
        f'data-rejected="{rejected}">{pending} pending, {approved} approved, {rejected} rejected.</p>'
        f'<p class="state" data-state="{review.state.value}">{escape(state_line)}</p>'
        + (f'<p class="notice" role="alert">{escape(notice)}</p>' if notice else "")
        + '<p class="hint">Keyboard: <kbd>j</kbd>/<kbd>k</kbd> next/previous, <kbd>a</kbd> approve, '
        "<kbd>r</kbd> reject, <kbd>?</kbd> all shortcuts.</p>" + approve_all + "</header>"
    )
    items = "".join(
        _item(item, review.decisions.get(item.item_id), open_, image_url, action, hidden) for item in task.items
    )
    help_dialog = (
        '<dialog id="help" aria-labelledby="help-title"><h2 id="help-title">Keyboard shortcuts</h2><dl>'
        "<dt><kbd>j</kbd> / <kbd>k</kbd></dt><dd>Next / previous image</dd>"
        "<dt><kbd>a</kbd></dt><dd>Approve the current image</dd>"
        "<dt><kbd>r</kbd></dt><dd>Reject the current image (choose a reason first; "
        "<kbd>r</kbd> moves to the reason list, <kbd>Enter</kbd> there rejects)</dd>"
        "<dt><kbd>?</kbd></dt><dd>Show or hide this help</dd></dl>"
        '<form method="dialog"><button type="submit">Close</button></form></dialog>'
    )
    title = f"Review: {task.brand} ({pending} pending)"
    return _page(title, header + f'<main id="items">{items}</main>' + help_dialog, static_base)
