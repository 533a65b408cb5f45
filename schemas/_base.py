"""The base every contract shares: immutable, and unknown fields are an error, not silently dropped."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Contract(BaseModel):
    """A frozen pydantic model that refuses fields it does not know."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True, defer_build=True)


# A reviewer's e-mail address is checked in full (pydantic's EmailStr) where it enters: a brand profile, the stack's
# REVIEWERS, `catalog run --reviewer`. The contracts between our own functions re-check only its shape: that keeps
# email_validator (~13 ms, a tenth of a cold start) out of the review Lambdas, and still refuses what could break a
# mail header or the comma-joined To line (whitespace, commas, no domain).
ReviewerAddress = Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")]
