"""Continuing the local run that waits for its review: an event set once the batch is decided or expired."""

import threading

from functions.review.service import ResumeStatus


class LocalResumer:
    """The local run waits on `finished`; set once the batch is decided or expired."""

    def __init__(self) -> None:
        self.finished = threading.Event()
        self.outcome: str | None = None

    def resume(self, review_id: str, handle: str | None, outcome: str) -> ResumeStatus:
        self.outcome = outcome
        self.finished.set()
        return ResumeStatus.RESUMED

    def fail_expired(self, review_id: str, handle: str | None, cause: str) -> ResumeStatus:
        self.finished.set()
        return ResumeStatus.RESUMED
