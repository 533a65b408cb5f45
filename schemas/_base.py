"""The base every contract shares: immutable, and unknown fields are an error, not silently dropped."""

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """A frozen pydantic model that refuses fields it does not know."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True, defer_build=True)
