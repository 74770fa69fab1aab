"""What every router shares: the unit-of-work and scope dependencies, the documented error
answers, and the router factory (every route runs in a ``LedgerRoute``)."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from billing_core.adapters.db import UnitOfWork
from billing_core.domain.credit import CreditPolicy
from config.settings import Settings
from jobs.api.auth import Principal, require
from jobs.api.idempotency import LedgerRoute, OwnTransactionRoute, uow_of
from jobs.api.models import ErrorBody


def policy_of(request: Request) -> CreditPolicy:
    """The credit policy of the settings the app was built with."""
    settings: Settings = request.app.state.api.settings
    return settings.credit


Uow = Annotated[UnitOfWork, Depends(uow_of)]
Policy = Annotated[CreditPolicy, Depends(policy_of)]
Reader = Annotated[Principal, Depends(require("billing:read"))]
Writer = Annotated[Principal, Depends(require("billing:write"))]
Admin = Annotated[Principal, Depends(require("admin"))]

_ERRORS = {
    400: "Malformed header (e.g. Idempotency-Key).",
    401: "No token, or an unknown or revoked one (with WWW-Authenticate).",
    403: "The token lacks the scope this call needs (with WWW-Authenticate).",
    404: "An id or number that does not exist.",
    409: "A ledger rule refused it (same code as the CLI), or an Idempotency-Key reused "
         "with another body.",
    413: "The request body is over the size limit.",
    422: "Malformed input: the error names the field and the problem.",
    503: "The database is busy or unreachable (with Retry-After): nothing was written, retry.",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _ERRORS.items()}


def router(tag: str, *, ledger: bool = True, own_transactions: bool = False) -> APIRouter:
    """A router whose routes run in one unit of work each (``ledger``), or whose endpoints
    run their own transactions (``own_transactions``: still idempotent), or plain ones."""
    if own_transactions:
        return APIRouter(route_class=OwnTransactionRoute, responses=ERROR_RESPONSES, tags=[tag])
    if ledger:
        return APIRouter(route_class=LedgerRoute, responses=ERROR_RESPONSES, tags=[tag])
    return APIRouter(responses=ERROR_RESPONSES, tags=[tag])
