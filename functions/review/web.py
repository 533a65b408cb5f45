"""The review endpoints as plain functions of (path parts, query, body) -> response, shared by the loopback server
and the API Gateway Lambda so both behave the same: GET renders and changes nothing, POST decides.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from functions.review.page import (
    STATIC_FILES,
    ImageUrl,
    describe_decision,
    render_message_page,
    render_review_page,
    security_headers,
    static_file,
)
from functions.review.service import (
    BadDecisionError,
    CsrfRefusedError,
    DecideOutcome,
    DecisionRequest,
    ResumeStatus,
    ReviewService,
    describe_result,
)
from functions.review.signing import LinkParams, LinkRefusedError
from functions.review.store import AlreadyDecided, DecisionApplied, StoredReview
from schemas.review import RejectionReason, ReviewItem, Verdict

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
REFUSED_TITLE = "This review link cannot be used"
REFUSED_MESSAGE = (
    "The link is invalid or has expired. Nothing was changed. Ask the person who sent it to re-issue the review."
)
CLOSED_TITLE = "This review is already closed"
CLOSED_MESSAGE = (
    "Your decisions are saved, but the workflow waiting for them had already closed (it timed out or was stopped), "
    "so it was not resumed. Ask the owner of the batch to run it again."
)

ImageUrlFactory = Callable[[StoredReview, LinkParams], ImageUrl]


@dataclass(frozen=True)
class WebResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


class ReviewWeb:
    """`base_path` is where the review routes live (`""` locally, `/prod` behind an API Gateway stage)."""

    def __init__(self, service: ReviewService, image_urls: ImageUrlFactory, base_path: str = "") -> None:
        self.service, self.image_urls, self.base_path = service, image_urls, base_path.rstrip("/")

    @property
    def static_base(self) -> str:
        return f"{self.base_path}/review-static"

    def _html(self, status: int, html: str, image_origins: set[str] | None = None) -> WebResponse:
        return WebResponse(status, html.encode(), security_headers(image_origins or ()))

    def _json(self, status: int, document: dict[str, Any]) -> WebResponse:
        body = json.dumps(document, default=str).encode()
        return WebResponse(status, body, security_headers(content_type="application/json"))

    def refused(self, as_json: bool = False, reason: str = "") -> WebResponse:
        logger.info("review link refused", extra={"reason": reason})
        if as_json:
            return self._json(403, {"error": REFUSED_MESSAGE})
        return self._html(403, render_message_page(REFUSED_TITLE, REFUSED_MESSAGE, self.static_base))

    def not_found(self) -> WebResponse:
        return self._html(404, render_message_page("Not found", "There is nothing here.", self.static_base))

    def static(self, name: str) -> WebResponse:
        if name not in STATIC_FILES:
            return self.not_found()
        return WebResponse(200, static_file(name), security_headers(content_type=STATIC_FILES[name]))

    def _render(self, review: StoredReview, params: LinkParams, status: int, notice: str | None) -> WebResponse:
        origins: set[str] = set()
        image_url = self.image_urls(review, params)

        def tracked(item: ReviewItem, kind: str) -> str:
            url = image_url(item, kind)
            origin = _origin(url)
            if origin:
                origins.add(origin)
            return url

        html = render_review_page(
            review,
            link_fields=params.as_fields(),
            csrf=self.service.csrf(params),
            action=f"{self.base_path}/review/{review.review_id}",
            static_base=self.static_base,
            image_url=tracked,
            notice=notice,
        )
        return self._html(status, html, origins)

    def page(self, review_id: str, query: dict[str, str]) -> WebResponse:
        """GET: verify and render. Reads only; mail scanners and link previews may fetch this freely."""
        try:
            review, params = self.service.open(review_id, query)
        except LinkRefusedError as error:
            return self.refused(reason=error.reason)
        return self._render(review, params, 200, None)

    def decide(self, review_id: str, content_type: str, body: bytes, identity: str | None = None) -> WebResponse:
        """POST: a form (no JavaScript) or JSON (fetch). Identity comes from SSO claims when present, else the store."""
        as_json = content_type.split(";")[0].strip().lower() == "application/json"
        if len(body) > MAX_BODY_BYTES:
            return self._json(413, {"error": "request too large"})
        try:
            fields, csrf, requests, approve_all = _parse_decision_body(as_json, body)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            return self._bad_request(as_json, f"The request could not be read: {error}")
        try:
            outcome = self.service.decide(review_id, fields, csrf, requests, approve_all, identity)
        except (LinkRefusedError, CsrfRefusedError) as error:
            return self.refused(as_json, getattr(error, "reason", "csrf"))
        except BadDecisionError as error:
            return self._bad_request(as_json, str(error))
        return self._decided(outcome, fields, as_json)

    def _bad_request(self, as_json: bool, message: str) -> WebResponse:
        if as_json:
            return self._json(400, {"error": message})
        return self._html(400, render_message_page("The decision was not recorded", message, self.static_base))

    def _decided(self, outcome: DecideOutcome, fields: dict[str, str], as_json: bool) -> WebResponse:
        review = outcome.review
        closed = outcome.resume is ResumeStatus.ALREADY_CLOSED and review.task.reissued_from is None
        status = 200 if outcome.applied else 409
        if closed:
            status = 410
        if as_json:
            results = []
            for item_id, result in outcome.results:
                entry: dict[str, Any] = {"item_id": item_id, "message": describe_result(result)}
                if isinstance(result, DecisionApplied):
                    entry.update(status="decided", message=describe_decision(result.decision) + ".")
                elif isinstance(result, AlreadyDecided):
                    entry["status"] = "already_decided"
                else:
                    entry["status"] = "closed"
                if isinstance(result, DecisionApplied | AlreadyDecided):
                    entry["decision"] = result.decision.model_dump(mode="json")
                results.append(entry)
            approved = sum(d.verdict is Verdict.APPROVED for d in review.decisions.values())
            document: dict[str, Any] = {
                "results": results,
                "review": {
                    "state": review.state.value,
                    "pending": len(review.pending_items),
                    "approved": approved,
                    "rejected": len(review.decisions) - approved,
                },
            }
            if closed:
                document["error"] = CLOSED_MESSAGE
            return self._json(status, document)
        if closed:
            return self._html(410, render_message_page(CLOSED_TITLE, CLOSED_MESSAGE, self.static_base))
        params = LinkParams.from_fields(review.review_id, fields)
        notice = " ".join(describe_result(result) for _, result in outcome.results[:3])
        if len(outcome.results) > 3:
            notice = f"{outcome.applied} of {len(outcome.results)} images decided."
        return self._render(review, params, status, notice)


def _parse_decision_body(as_json: bool, body: bytes) -> tuple[dict[str, str], str, list[DecisionRequest], bool]:
    if as_json:
        document = json.loads(body or b"{}")
        if not isinstance(document, dict):
            raise ValueError("expected a JSON object")
        fields = {key: str(document.get(key, "")) for key in ("e", "k", "s")}
        requests = [
            DecisionRequest(
                item_id=str(entry["item_id"]),
                verdict=Verdict(entry["verdict"]),
                reason=RejectionReason(entry["reason"]) if entry.get("reason") else None,
                note=str(entry["note"]) if entry.get("note") else None,
            )
            for entry in document.get("decisions") or []
        ]
        return fields, str(document.get("csrf", "")), requests, document.get("approve_all") is True
    form = {key: values[0] for key, values in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
    fields = {key: form.get(key, "") for key in ("e", "k", "s")}
    if form.get("approve_all") == "1":
        return fields, form.get("csrf", ""), [], True
    request = DecisionRequest(
        item_id=form["item_id"],
        verdict=Verdict(form.get("verdict", "")),
        reason=RejectionReason(form["reason"]) if form.get("reason") else None,
        note=form.get("note") or None,
    )
    return fields, form.get("csrf", ""), [request], False
