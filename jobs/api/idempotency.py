"""One unit of work per request, and idempotent replay of mutating requests.

Every route of the API uses :class:`LedgerRoute`. Around the endpoint it
- opens one unit of work (``ledger_uow``: read-only for GET) and puts it on ``request.state``;
- commits it only when the endpoint answered below 400; an error rolls everything back, so
  nothing is ever partially written;
- with an ``Idempotency-Key`` header on a POST: first claims the key by inserting the
  ``api_idempotency`` row *in the same transaction* as the ledger change, then stores the
  answer in that row before the commit. The unique (token, key) constraint serialises two
  requests with the same key: the second waits for the first's transaction (PostgreSQL row
  lock on the unique index, SQLite's write lock) and then replays its answer; it never runs the
  change twice. Same key with another method/path or body → 409 ``idempotency_key_reused``.
- Endpoints that do their work in their own transactions (``POST /sync:run`` starts a run
  that the sync engine records itself) use :class:`OwnTransactionRoute`: no transaction is
  held across the endpoint (on SQLite it would hold the write lock the run needs); the key is
  claimed in a short transaction of its own (a concurrent duplicate gets 409
  ``idempotency_in_progress``), the answer stored after. A claim left pending by a crash is
  taken over after ``STALE_CLAIM``.
- Stored answers are kept ``KEEP_ANSWERS`` (7 days, like the big payment APIs' 24 h and
  more); :func:`purge_answers` removes older ones (the daemon's housekeeping calls it).
- A domain error (4xx) is an answer too: it is stored (after the rollback, in a fresh
  transaction) and replayed, as the big payment APIs do. A malformed request (422 from the
  request parser) is not stored: it changes nothing and the same body gives the same answer.
  Neither is a 429 (``sync_busy``: ask again after ``Retry-After``) nor a 5xx: the request did
  not happen, and its retry with the same key must run, not replay the refusal for days.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from billing_core.adapters.db import UnitOfWork
from billing_core.domain.errors import LedgerError
from billing_core.service import ledger_uow
from jobs.api.auth import authenticate
from jobs.api.errors import ApiError, api_error_response, ledger_response
from jobs.api.tables import api_idempotency

HEADER = "Idempotency-Key"
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
_PENDING = 0          # status_code of a claimed row whose answer is not written yet
STALE_CLAIM = timedelta(minutes=10)
KEEP_ANSWERS = timedelta(days=7)


@dataclass(frozen=True)
class Claim:
    key: str
    token_id: int
    method_path: str
    body_hash: str


def fingerprint(raw: bytes) -> str:
    """Hash of the body; JSON is canonicalised, so key order and spacing do not matter. Numbers
    keep the text they were written with (``0.1`` and ``0.10000000000000001`` are one float
    but two bodies to a route that reads exact decimals, ``POST /usage/events``)."""
    try:
        canonical = _canonical(json.loads(raw, parse_float=_Number, parse_int=_Number,
                                          parse_constant=_Number))
        data = canonical.encode("utf-8", "surrogatepass")
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = raw
    return hashlib.sha256(data).hexdigest()


class _Number(str):
    """A JSON number (or NaN / Infinity) as written: never a string of the same text."""


def _canonical(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_canonical(value[k])}"
                              for k in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, _Number):
        return str.__str__(value)
    return json.dumps(value)


def purge_answers(uow: UnitOfWork, older_than: timedelta = KEEP_ANSWERS) -> int:
    """Forget stored answers older than ``older_than``; returns how many. The caller commits."""
    return int(uow.conn.execute(delete(api_idempotency).where(
        api_idempotency.c.created_at < uow.now() - older_than)).rowcount)


def _kept(status_code: int) -> bool:
    """Whether an error answer is stored under its key (see the module's rules)."""
    return status_code < 500 and status_code != 429


def uow_of(request: Request) -> UnitOfWork:
    """The request's unit of work (a dependency for the endpoints)."""
    uow = getattr(request.state, "uow", None)
    if not isinstance(uow, UnitOfWork):
        raise TypeError("route is not a LedgerRoute: no unit of work on the request")
    return uow


async def _claim_for(request: Request) -> Claim | None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not _KEY_RE.match(key):
        raise ApiError(400, "invalid_idempotency_key", HEADER, key,
                       "must be 1 to 255 printable ASCII characters without spaces")
    principal = await run_in_threadpool(authenticate, request,
                                        request.headers.get("authorization"))
    raw = await request.body()
    return Claim(key, principal.token_id, f"{request.method} {request.url.path}",
                 fingerprint(raw))


def _replay_or_conflict(uow: UnitOfWork, claim: Claim) -> Response | None:
    row = uow.conn.execute(select(api_idempotency).where(
        api_idempotency.c.token_id == claim.token_id,
        api_idempotency.c.key == claim.key)).mappings().first()
    if row is None:
        return None
    if (row["method_path"], row["body_hash"]) != (claim.method_path, claim.body_hash):
        raise ApiError(409, "idempotency_key_reused", HEADER, claim.key,
                       f"was used for another request ({row['method_path']} with another "
                       "body): use a new key for a new request")
    if row["status_code"] == _PENDING:
        if row["created_at"] < uow.now() - STALE_CLAIM:
            uow.conn.execute(delete(api_idempotency).where(
                api_idempotency.c.id == row["id"],
                api_idempotency.c.status_code == _PENDING))
            return None
        raise ApiError(409, "idempotency_in_progress", HEADER, claim.key,
                       "a request with this key is still in progress: retry later")
    return Response(row["response_body"], status_code=row["status_code"],
                    media_type="application/json", headers={"Idempotent-Replayed": "true"})


def _begin(uow: UnitOfWork, claim: Claim) -> Response | None:
    """Claim the key in the request's transaction, or answer with the stored response."""
    for _ in range(3):
        try:
            with uow.savepoint():
                uow.conn.execute(insert(api_idempotency).values(
                    key=claim.key, token_id=claim.token_id, method_path=claim.method_path,
                    body_hash=claim.body_hash, status_code=_PENDING, response_body="",
                    created_at=uow.now()))
            return None
        except IntegrityError:
            answer = _replay_or_conflict(uow, claim)
            if answer is not None:
                return answer
    raise ApiError(409, "idempotency_in_progress", HEADER, claim.key,
                   "a request with this key is still in progress: retry later")


def _finish(uow: UnitOfWork, claim: Claim | None, response: Response) -> None:
    if claim is not None:
        uow.conn.execute(update(api_idempotency).where(
            api_idempotency.c.token_id == claim.token_id,
            api_idempotency.c.key == claim.key,
        ).values(status_code=response.status_code,
                 response_body=bytes(response.body).decode("utf-8")))
    uow.commit()


def _store_error(uow: UnitOfWork, claim: Claim, response: Response) -> None:
    """After a rollback: remember the error answer for this key (if nobody else did)."""
    try:
        uow.conn.execute(insert(api_idempotency).values(
            key=claim.key, token_id=claim.token_id, method_path=claim.method_path,
            body_hash=claim.body_hash, status_code=response.status_code,
            response_body=bytes(response.body).decode("utf-8"), created_at=uow.now()))
        uow.conn.commit()
    except IntegrityError:
        uow.conn.rollback()


async def run_in_unit_of_work(request: Request,
                              endpoint: Callable[[Request], Coroutine[Any, Any, Response]],
                              ) -> Response:
    state = request.app.state.api
    claim = await _claim_for(request)
    uow = ledger_uow(state.engine, read_only=claim is None and request.method == "GET",
                     policy=state.settings.credit, clock=state.clock)
    await run_in_threadpool(uow.__enter__)
    request.state.uow = uow
    try:
        if claim is not None:
            replay = await run_in_threadpool(_begin, uow, claim)
            if replay is not None:
                return replay
        try:
            response = await endpoint(request)
            if request.method != "GET" and response.status_code < 400:
                await run_in_threadpool(_finish, uow, claim, response)
            return response
        except (LedgerError, ApiError) as exc:
            await run_in_threadpool(uow.rollback)
            error = (ledger_response(exc) if isinstance(exc, LedgerError)
                     else api_error_response(exc))
            if claim is not None and _kept(error.status_code):
                await run_in_threadpool(_store_error, uow, claim, error)
            return error
    finally:
        await run_in_threadpool(uow.__exit__, None, None, None)


def _claim_alone(engine_uow: UnitOfWork, claim: Claim) -> Response | None:
    with engine_uow as uow:
        answer = _begin(uow, claim)
        if answer is None:
            uow.commit()
        return answer


def _record_alone(engine_uow: UnitOfWork, claim: Claim, response: Response) -> None:
    with engine_uow as uow:
        key = (api_idempotency.c.token_id == claim.token_id) & (api_idempotency.c.key == claim.key)
        if response.status_code >= 400 and not _kept(response.status_code):
            uow.conn.execute(delete(api_idempotency).where(key))
        else:
            uow.conn.execute(update(api_idempotency).where(key).values(
                status_code=response.status_code,
                response_body=bytes(response.body).decode("utf-8")))
        uow.conn.commit()


async def run_outside_unit_of_work(request: Request,
                                   endpoint: Callable[[Request], Coroutine[Any, Any, Response]],
                                   ) -> Response:
    state = request.app.state.api
    claim = await _claim_for(request)

    def new_uow() -> UnitOfWork:
        return ledger_uow(state.engine, policy=state.settings.credit, clock=state.clock)

    if claim is not None:
        replay = await run_in_threadpool(_claim_alone, new_uow(), claim)
        if replay is not None:
            return replay
    try:
        response = await endpoint(request)
    except (LedgerError, ApiError) as exc:
        response = (ledger_response(exc) if isinstance(exc, LedgerError)
                    else api_error_response(exc))
    except BaseException:
        if claim is not None:
            await run_in_threadpool(_record_alone, new_uow(), claim, Response(status_code=500))
        raise
    if claim is not None:
        await run_in_threadpool(_record_alone, new_uow(), claim, response)
    return response


class LedgerRoute(APIRoute):
    """An APIRoute whose endpoint runs inside one unit of work (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = super().get_route_handler()

        async def handler(request: Request) -> Response:
            return await run_in_unit_of_work(request, endpoint)

        return handler


class OwnTransactionRoute(APIRoute):
    """An APIRoute whose endpoint runs its own transactions; idempotent all the same."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = super().get_route_handler()

        async def handler(request: Request) -> Response:
            return await run_outside_unit_of_work(request, endpoint)

        return handler
