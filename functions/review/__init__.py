"""Human review: signed links, a review page, per-image decisions, publishing and the feedback dataset.

Locally `catalog run --review local` (see `local_flow`); on AWS the handlers in `functions.handlers.review_*`.
"""
