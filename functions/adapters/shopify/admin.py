"""The Shopify Admin GraphQL API at one pinned version, over httpx: cost-based throttling and bounded retries.

- Every response's `extensions.cost.throttleStatus` (maximumAvailable, currentlyAvailable, restoreRate) is kept;
  a request whose expected cost exceeds what is available waits for the bucket to refill first.
- A `THROTTLED` error (HTTP 200), a 429 (honouring `Retry-After`), a 5xx or a dropped connection is retried with
  exponential backoff, `max_attempts` times in all; then `ShopifyUnavailableError`, a terminal state for the caller.
- The access token travels only in the `X-Shopify-Access-Token` header: never in a URL, a log line or an error.
"""

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from functions.stages.shopify_publish import ShopifyRefusedError, ShopifyUnavailableError

# Pinned: a supported stable version whose product media mutations (stagedUploadsCreate, productUpdate with
# `media`, productReorderMedia, fileUpdate) are not deprecated. productCreateMedia is, since 2024-04.
API_VERSION = "2025-10"
_SHOP_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9\-]*\.myshopify\.com$")
_LOOPBACK = re.compile(r"^http://(127\.0\.0\.1|localhost):\d{1,5}$")
_DEFAULT_COST = 10  # what a small query or one mutation costs; Shopify's own estimate replaces it once seen
_MAX_BACKOFF_SECONDS = 30.0


# The two ways a request ends badly are the stage's own terms (a stage never imports an adapter).
__all__ = ["API_VERSION", "ShopifyAdminClient", "ShopifyRefusedError", "ShopifyUnavailableError", "admin_base_url"]


def admin_base_url(store: str) -> str:
    """`acme.myshopify.com` -> `https://acme.myshopify.com`; a loopback `http://127.0.0.1:PORT` (a test store) as is."""
    store = store.strip().rstrip("/")
    if _LOOPBACK.match(store):
        return store
    domain = store.removeprefix("https://")
    if not _SHOP_DOMAIN.match(domain):
        raise ValueError(
            f"Shopify store {store!r}: give the shop's myshopify.com domain (e.g. acme.myshopify.com), "
            "or http://127.0.0.1:PORT for a local test store"
        )
    return f"https://{domain}"


class ShopifyAdminClient:
    """`execute(query, variables)` -> the response's `data`; `upload(target, ...)` sends a staged upload."""

    def __init__(
        self,
        store: str,
        token: str,
        *,
        api_version: str = API_VERSION,
        max_attempts: int = 5,
        backoff_seconds: float = 1.0,
        timeout_seconds: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token:
            raise ValueError("no Shopify Admin access token was given")
        self.base_url = admin_base_url(store)
        self.api_version = api_version
        self.endpoint = f"{self.base_url}/admin/api/{api_version}/graphql.json"
        self.max_attempts, self.backoff_seconds, self.sleep = max_attempts, backoff_seconds, sleep
        self._token = token
        self._http = httpx.Client(timeout=timeout_seconds, transport=transport, follow_redirects=False)
        # The leaky bucket as Shopify last reported it: None until the first response.
        self.available: float | None = None
        self.restore_rate: float = 50.0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ShopifyAdminClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- GraphQL -----------------------------------------------------------------------------------------------

    def execute(self, query: str, variables: Mapping[str, Any] | None = None, cost: int = _DEFAULT_COST) -> Any:
        """Run one operation; returns `data`. Waits for throttle budget, retries what is worth retrying."""
        body = {"query": query, "variables": dict(variables or {})}
        headers = {"X-Shopify-Access-Token": self._token, "Content-Type": "application/json"}
        problem = "no attempt was made"
        for attempt in range(self.max_attempts):
            self._wait_for_budget(cost)
            try:
                response = self._http.post(self.endpoint, json=body, headers=headers)
            except httpx.TransportError as error:
                problem = f"the connection failed ({type(error).__name__})"
                self._back_off(attempt, None)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"Shopify answered HTTP {response.status_code}"
                self._back_off(attempt, response.headers.get("Retry-After"))
                continue
            if response.status_code in (401, 403):
                raise ShopifyRefusedError(f"Shopify refused the Admin access token (HTTP {response.status_code})")
            if response.status_code != 200:
                raise ShopifyRefusedError(f"Shopify answered HTTP {response.status_code} to a GraphQL request")
            payload = response.json()
            cost_info = (payload.get("extensions") or {}).get("cost") or {}
            self._remember_throttle(cost_info)
            errors = payload.get("errors") or []
            if any((e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors):
                problem = "Shopify throttled the request (THROTTLED)"
                requested = cost_info.get("requestedQueryCost", cost)
                self._wait_for_budget(requested, force=True)
                cost = requested
                continue
            if errors:
                raise ShopifyRefusedError("GraphQL errors: " + "; ".join(str(e.get("message")) for e in errors))
            return payload.get("data")
        raise ShopifyUnavailableError(f"{problem}, {self.max_attempts} attempts in all")

    def _remember_throttle(self, cost_info: Mapping[str, Any]) -> None:
        status = cost_info.get("throttleStatus") or {}
        if "currentlyAvailable" in status:
            self.available = float(status["currentlyAvailable"])
            self.restore_rate = float(status.get("restoreRate") or self.restore_rate)

    def _wait_for_budget(self, cost: float, force: bool = False) -> None:
        if self.available is None or (self.available >= cost and not force):
            return
        missing = max(cost - self.available, 0.0)
        wait = max(missing / self.restore_rate, 0.05 if force else 0.0)
        self.sleep(min(wait, _MAX_BACKOFF_SECONDS))
        self.available = max(self.available, cost)  # restored by now; the next response says exactly

    def _back_off(self, attempt: int, retry_after: str | None) -> None:
        if attempt + 1 >= self.max_attempts:
            return
        try:
            wait = float(retry_after) if retry_after else self.backoff_seconds * 2**attempt
        except ValueError:
            wait = self.backoff_seconds * 2**attempt
        self.sleep(min(wait, _MAX_BACKOFF_SECONDS))

    # -- staged uploads ------------------------------------------------------------------------------------------

    def upload(self, target: Mapping[str, Any], data: bytes, filename: str, content_type: str) -> None:
        """Send the file to a `stagedUploadsCreate` target (POST: its parameters as form fields, the file last)."""
        fields = {p["name"]: p["value"] for p in target.get("parameters") or ()}
        problem = "no attempt was made"
        for attempt in range(self.max_attempts):
            try:
                response = self._http.post(
                    str(target["url"]), data=fields, files={"file": (filename, data, content_type)}
                )
            except httpx.TransportError as error:
                problem = f"the upload connection failed ({type(error).__name__})"
                self._back_off(attempt, None)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"the staged upload answered HTTP {response.status_code}"
                self._back_off(attempt, response.headers.get("Retry-After"))
                continue
            if response.status_code >= 300:
                raise ShopifyRefusedError(f"the staged upload of {filename} was refused (HTTP {response.status_code})")
            return
        raise ShopifyUnavailableError(f"{problem}, {self.max_attempts} attempts in all")
