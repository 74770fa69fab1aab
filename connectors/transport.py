"""The one HTTP path of every connector: timeouts, CA bundle, retry, status classes, call log.

Rules kept here:
- `Transport` is a `requests.Session`, so simple-salesforce (given `session=`) and msal (given
  `http_client=`) go through it too: every call gets the configured (connect, read) timeout and
  the configured CA bundle, passed per request so that `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` in
  the environment cannot override it (requests lets them override `Session.verify`).
- Status is classified here and only here: 2xx/3xx pass; 429, 5xx, connection errors and timeouts
  raise `RetriableError` and are retried (tenacity) with exponential backoff and jitter, bounded by
  `max_attempts` and `max_retry_seconds` of waiting; a `Retry-After` is honoured exactly (and a
  wait longer than the bound gives up at once). 401 → `AuthError`, 412 → `ConflictError`, other
  4xx → `FatalError`, each with the CRM's own code and message (`ErrorReader`). A CRM-specific
  `classify` hook may return another error (Salesforce: REQUEST_LIMIT_EXCEEDED → BudgetExhausted,
  never retried, for the daily allowance; a RetriableError, retried like a 429, for the
  concurrency limit).
- A call that creates something (``resend=False``: a Salesforce file, a Dataverse note) is
  retried only when it surely was not applied (no connection made, 429, 5xx); a read timeout
  or a connection lost after sending raises `UnconfirmedError` instead of sending it again,
  which made a second file when the CRM had taken the first and answered late.
- The budget meter is checked before and fed after every call; every call is counted.
- One debug line per call: method, path (never the query string), status, duration. Headers and
  bodies are never logged, so tokens cannot leak.
- `sleep` is injectable: tests never sleep for real.
- A body parses whatever integers it holds: Python refuses to convert one of more than 4,300
  digits (`sys.get_int_max_str_digits`), which failed the whole page on every run. A response's
  `.json()` that meets one parses the body again with such integers as `Decimal`, for the
  values' own checks to refuse (`connectors.values`); every other body parses as fast as before.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_any
from tenacity.stop import stop_base
from tenacity.wait import wait_exponential_jitter

from connectors.base import (
    AuthError,
    ConflictError,
    ConnectorError,
    FatalError,
    RetriableError,
    UnconfirmedError,
)
from connectors.budget import BudgetMeter

log = logging.getLogger(__name__)

ErrorReader = Callable[[requests.Response], tuple[str | None, str]]
Classifier = Callable[[requests.Response, str | None, str], ConnectorError | None]


def read_error(resp: requests.Response) -> tuple[str | None, str]:
    """The CRM's own (code, message) from any of the error shapes the CRMs send."""
    try:
        body: Any = resp.json()
    except ValueError:
        return None, (resp.text or resp.reason or "")[:500]
    if isinstance(body, list) and body and isinstance(body[0], dict):  # Salesforce REST
        first = body[0]
        return first.get("errorCode"), str(first.get("message", ""))
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # Dataverse OData
            return err.get("code"), str(err.get("message", ""))
        if isinstance(err, str):  # OAuth
            return err, str(body.get("error_description", ""))
    return None, str(body)[:500]


def retry_after_seconds(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: fall back to backoff


class _WaitBound(stop_base):
    """Stop when the waits so far plus the next one would pass the bound (injected sleep safe)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, state: Any) -> bool:
        return bool(state.idle_for + state.upcoming_sleep > self.seconds)


#: Digits of an integer Python converts by default (the interpreter's own limit is 4,300).
_INT_DIGITS = 4000


def _wide_int(text: str) -> int | Decimal:
    return int(text) if len(text) <= _INT_DIGITS else Decimal(text)


def _int_limit(exc: ValueError) -> bool:
    """Whether a ``json.loads`` error is the integer-size limit, not a malformed body."""
    return not isinstance(exc, (json.JSONDecodeError, requests.JSONDecodeError))


def loads(text: str | bytes, **kw: Any) -> Any:
    """``json.loads`` that takes integers of any size (see the module rules)."""
    try:
        return json.loads(text, **kw)
    except ValueError as exc:
        if not _int_limit(exc) or "parse_int" in kw:
            raise
        return json.loads(text, parse_int=_wide_int, **kw)


class CrmResponse(requests.Response):
    """A response whose ``.json()`` takes integers of any size (see the module rules)."""

    def json(self, **kw: Any) -> Any:
        try:
            return super().json(**kw)
        except ValueError as exc:
            if not _int_limit(exc) or "parse_int" in kw:
                raise
            return super().json(parse_int=_wide_int, **kw)


class Transport(requests.Session):
    def __init__(
        self,
        *,
        name: str,
        timeout: tuple[float, float] = (5.0, 60.0),
        ca_bundle: str | None = None,
        max_attempts: int = 5,
        max_retry_seconds: float = 120.0,
        budget: BudgetMeter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        classify: Classifier | None = None,
        raise_errors: bool = True,
    ):
        super().__init__()
        self.name = name
        self.timeout = timeout
        self.ca_bundle = ca_bundle
        self.max_attempts = max_attempts
        self.max_retry_seconds = max_retry_seconds
        self.budget = budget or BudgetMeter()
        self.sleep = sleep
        self.classify = classify
        self.raise_errors = raise_errors

    @property
    def calls(self) -> int:
        return self.budget.calls

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kw: Any) -> Any:
        method = method.decode() if isinstance(method, bytes) else method
        url = url.decode() if isinstance(url, bytes) else url
        resend = kw.pop("resend", True)
        kw.setdefault("timeout", self.timeout)
        if kw.get("verify") is None and self.ca_bundle:
            kw["verify"] = self.ca_bundle
        retrying = Retrying(
            stop=stop_any(stop_after_attempt(self.max_attempts), _WaitBound(self.max_retry_seconds)),
            wait=self._wait,
            retry=retry_if_exception_type(RetriableError),
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(self._once, method, url, *args, resend=resend, **kw)

    _backoff = wait_exponential_jitter(initial=1, max=60, jitter=1)

    def _wait(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetriableError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    def _once(self, method: str, url: str, *args: Any, resend: bool = True,
              **kw: Any) -> requests.Response:
        self.budget.take()
        path = urlsplit(url).path
        started = time.perf_counter()
        try:
            resp = super().request(method, url, *args, **kw)
        except (requests.ConnectionError, requests.Timeout) as exc:
            log.debug("%s %s %s -> %s", self.name, method, path, type(exc).__name__)
            if not resend and _maybe_applied(exc):
                raise UnconfirmedError(f"{method} {path}: {type(exc).__name__}: sent, no "
                                       "answer (the CRM may have applied it)") from None
            raise RetriableError(f"{method} {path}: {type(exc).__name__}") from None
        resp.__class__ = CrmResponse
        took_ms = (time.perf_counter() - started) * 1000
        log.debug("%s %s %s %d %.0fms", self.name, method, path, resp.status_code, took_ms)
        self.budget.observe(resp.headers)
        error = self.error_for(resp)
        if error is None:
            return resp
        if isinstance(error, RetriableError) or self.raise_errors:
            raise error
        return resp

    def error_for(self, resp: requests.Response) -> ConnectorError | None:
        """Classify one response (None for success); the only status table of the project."""
        status = resp.status_code
        if status < 400:
            return None
        code, message = read_error(resp)
        if self.classify is not None:
            special = self.classify(resp, code, message)
            if special is not None:
                return special
        if status == 429 or status >= 500:
            return RetriableError(message, code=code, status=status,
                                  retry_after=retry_after_seconds(resp))
        if status == 401:
            return AuthError(message, code=code, status=status)
        if status == 412:
            return ConflictError(message, code=code, status=status)
        return FatalError(message, code=code, status=status)


def _maybe_applied(exc: Exception) -> bool:
    """Whether a failed call may have reached the CRM: anything but a connection that was
    never made (a connect timeout, a refused or unresolvable address)."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    from urllib3.exceptions import NewConnectionError

    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, NewConnectionError) and not isinstance(
        exc.args[0] if exc.args else None, NewConnectionError)
