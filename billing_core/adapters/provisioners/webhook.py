"""The ``webhook`` provisioner: POST the task as JSON to a configured URL.

Rules kept here
- The body is canonical JSON (sorted keys, no spaces); the header ``X-Ledgerbridge-Signature``
  is ``sha256=<hex HMAC-SHA256 of the exact body bytes with the shared secret>``; the header
  ``Idempotency-Key`` is the request's stored key, the same on every attempt and every re-send,
  and so is the body (a receiver that compares a repeated key's body with the first, as the
  IETF Idempotency-Key draft asks, sees the same request); the dispatch's attempt number is
  the header ``X-Ledgerbridge-Attempt``.
- The secret comes from the environment variable named in ``[provisioner] secret_env``; it is
  never logged and never shown by ``repr``.
- Every HTTP call has a timeout. Status is classified in one place (:func:`classify`): 2xx is
  accepted (``dispatched``); 429, 5xx, timeouts and connection errors are retried with
  exponential backoff and jitter (``Retry-After`` honoured, capped), at most ``max_attempts``
  tries in all; any other status is fatal at once (no retry storm on a 400).
- The sleeper is injected (tests pass a no-op), so nothing waits for real in tests.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from billing_core.adapters.provisioners.base import Outcome, ProvisionError, ProvisioningTask

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Ledgerbridge-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-Ledgerbridge-Attempt"
MAX_RETRY_AFTER_SECONDS = 60.0
_BACKOFF = wait_exponential(multiplier=0.5, max=30) + wait_random(0, 1)


def canonical_body(task: ProvisioningTask) -> bytes:
    return json.dumps(task.payload(), sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return hmac.compare_digest(sign(body, secret), header or "")


class _Retry(ProvisionError):
    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, retriable=True, status=status)
        self.retry_after = retry_after


def classify(response: requests.Response) -> None:
    """Return for 2xx; raise ``_Retry`` for 429/5xx, a fatal ``ProvisionError`` otherwise."""
    status = response.status_code
    if 200 <= status < 300:
        return
    snippet = (response.text or "")[:200].replace("\n", " ")
    if status == 429 or status >= 500:
        raise _Retry(f"HTTP {status}: {snippet}", status=status,
                     retry_after=_retry_after(response.headers.get("Retry-After")))
    raise ProvisionError(f"HTTP {status}: {snippet}", retriable=False, status=status)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        return None


class WebhookProvisioner:
    name = "webhook"

    def __init__(self, url: str, secret: str, *, max_attempts: int = 5,
                 timeout_seconds: float = 10.0, max_total_seconds: float = 120.0,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url={url!r} must be an http(s) URL")
        if not secret:
            raise ValueError("webhook secret is empty")
        if max_attempts < 1:
            raise ValueError(f"max_attempts={max_attempts!r} must be >= 1")
        self.url = url
        self._secret = secret
        self.max_attempts = max_attempts
        self.timeout_seconds = timeout_seconds
        self.max_total_seconds = max_total_seconds
        self.session = session or requests.Session()
        self.sleep = sleep

    def __repr__(self) -> str:
        return f"WebhookProvisioner(url={self.url!r}, max_attempts={self.max_attempts})"

    def provision(self, task: ProvisioningTask) -> Outcome:
        body = canonical_body(task)
        headers = {"Content-Type": "application/json",
                   IDEMPOTENCY_HEADER: task.idempotency_key,
                   ATTEMPT_HEADER: str(task.attempt),
                   SIGNATURE_HEADER: sign(body, self._secret)}
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_total_seconds),
            wait=self._wait, retry=retry_if_exception(lambda e: isinstance(e, _Retry)),
            sleep=self.sleep, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    self._post(task, body, headers)
        except _Retry as exc:
            raise ProvisionError(f"gave up after {self.max_attempts} attempt(s): {exc}",
                                 retriable=True, status=exc.status) from None
        return "dispatched"

    def _post(self, task: ProvisioningTask, body: bytes, headers: dict[str, str]) -> None:
        try:
            response = self.session.post(self.url, data=body, headers=headers,
                                         timeout=self.timeout_seconds)
        except requests.Timeout as exc:
            raise _Retry(f"timeout after {self.timeout_seconds}s: {type(exc).__name__}") from None
        except requests.ConnectionError as exc:
            raise _Retry(f"connection error: {type(exc).__name__}") from None
        log.info("provision webhook request=%s key=%s status=%s", task.request_id,
                 task.idempotency_key, response.status_code)
        classify(response)

    @staticmethod
    def _wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retry) and exc.retry_after is not None:
            return exc.retry_after
        return float(_BACKOFF(state))
