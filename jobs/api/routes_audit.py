"""``GET /audit``: the audit trail over HTTP (``billing_core.service.audit``), the same filters
as ``ledgerbridge audit list``, keyset-paginated (rows never change, so a cursor is stable).
It shows every change with its actor (token names, OS users), so it needs the ``admin`` scope,
like the other operator reads (``/status``, ``/sync/quarantine``)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel

from billing_core.service.accounts import resolve_account
from billing_core.service.audit import list_entries
from jobs.api.deps import Admin, Uow, router
from jobs.api.models_admin import jsonable
from jobs.api.routes_billing import Cursor, Limit
from jobs.api.views import decode_cursor, encode_cursor

routes = router("audit")


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str | None = None
    entity_ref: str | None = None
    account_id: int | None = None
    changes: dict[str, Any]
    run_id: str | None = None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None = None


@routes.get("/audit")
def list_audit(
        uow: Uow, _: Admin,
        account: Annotated[str | None, Query(min_length=1, max_length=64,
                                             pattern=r"^[A-Za-z0-9_.:\-]+$",
                                             description="Ledger id or CRM account id.")] = None,
        since: Annotated[str | None, Query(max_length=40, examples=["2026-04-01"],
                                           description="From this date or time (UTC) on.")] = None,
        entity: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$",
                                            examples=["invoice"])] = None,
        actor: Annotated[str | None, Query(min_length=1, max_length=160,
                                           examples=["api:stripe-webhooks", "cli:*"])] = None,
        cursor: Cursor = None, limit: Limit = 100) -> AuditPage:
    """Audit rows, oldest first: who (``cli:<user>``, ``api:<token>``, ``sync:<connection>``,
    ``system``) changed what (entity type, id and number, action), when, and the changed
    fields as ``{"field": [before, after]}``. ``actor`` is exact, or a prefix ending in ``:``
    or ``*``."""
    account_id = int(resolve_account(uow.conn, account)["id"]) if account else None
    rows = list_entries(uow.conn, account_id=account_id, since=since, entity_type=entity,
                        actor=actor, after_id=decode_cursor(cursor), limit=limit + 1)
    items = [AuditEntryOut(**{**r, "changes": jsonable(r["changes"])}) for r in rows[:limit]]
    return AuditPage(items=items, next_cursor=encode_cursor(items[-1].id)
                     if len(rows) > limit else None)
