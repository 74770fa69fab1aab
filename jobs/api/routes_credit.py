"""Credit control over HTTP: an account's hold (reasons, exposure, limit, history), the manual
hold an admin places and releases, and the provisioning queue. A thin layer over
``service.holds`` / ``credit_control`` / ``receivables`` / ``provisioning``."""
from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from billing_core.domain.credit import CreditPolicy
from billing_core.service import holds, provisioning, receivables
from billing_core.service.accounts import resolve_account
from jobs.api.deps import Admin, Policy, Reader, Uow, Writer, router
from jobs.api.models import MAX_ID, NAME_PATTERN
from jobs.api.models_admin import (
    HoldEvent,
    HoldOut,
    HoldReasonOut,
    PlaceHold,
    ProvisioningOut,
    ProvisioningPage,
    ReleaseHold,
    jsonable,
)
from jobs.api.routes_billing import Cursor, Limit
from jobs.api.views import decode_cursor, encode_cursor, money

routes = router("credit control")

AccountRef = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME_PATTERN,
                                 description="Ledger id or CRM account id.")]
State = Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$", examples=["awaiting_hold_release"])]


def _hold(uow: Uow, account_id: int, policy: CreditPolicy) -> HoldOut:
    conn = uow.conn
    summary = receivables.account_summary(conn, account_id, uow.now().date(),
                                          grace_days=policy.overdue_grace_days,
                                          include_unbilled=policy.include_unbilled_orders)
    currency = summary["currency"]
    reasons = holds.current_reasons(conn, account_id)
    return HoldOut(
        account_id=account_id, on_hold=bool(reasons), currency=currency,
        reasons=[HoldReasonOut(reason=r.reason, source=r.source, placed_at=r.placed_at,
                               details=jsonable(r.details)) for r in reasons.values()],
        exposure=money(summary["exposure_minor"], currency) or "0",
        credit_limit=money(summary["credit_limit_minor"], currency),
        available_credit=money(summary["available_credit_minor"], currency),
        history=[HoldEvent(**{**h, "details": jsonable(h["details"])})
                 for h in holds.history(conn, account_id)])


@routes.get("/accounts/{account}/hold")
def show_hold(account: AccountRef, uow: Uow, _: Reader, policy: Policy) -> HoldOut:
    """Why the account is (or is not) on hold, its exposure against its limit, and history."""
    return _hold(uow, int(resolve_account(uow.conn, account)["id"]), policy)


@routes.post("/accounts/{account}/hold:place")
def place_hold(account: AccountRef, body: PlaceHold, uow: Uow, admin: Admin,
               policy: Policy) -> HoldOut:
    """Place a manual hold (only an admin's release lifts it)."""
    account_id = int(resolve_account(uow.conn, account)["id"])
    holds.place_manual_hold(uow, account_id, body.note, admin=admin.name)
    return _hold(uow, account_id, policy)


@routes.post("/accounts/{account}/hold:release")
def release_hold(account: AccountRef, body: ReleaseHold, uow: Uow, admin: Admin,
                 policy: Policy) -> HoldOut:
    """Release the manual hold. Other reasons are refused with the rule that clears them."""
    account_id = int(resolve_account(uow.conn, account)["id"])
    holds.release_manual_hold(uow, account_id, admin=admin.name, reason=body.reason)
    return _hold(uow, account_id, policy)


@routes.get("/provisioning")
def list_provisioning(uow: Uow, _: Reader, state: State = None,
                      account_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                      cursor: Cursor = None, limit: Limit = 100) -> ProvisioningPage:
    """Provisioning requests (optionally in one state), in creation order."""
    rows = provisioning.list_requests(uow.conn, state=state, account_id=account_id,
                                      after_id=decode_cursor(cursor), limit=limit + 1)
    items = [ProvisioningOut(**{**r, "quantity": str(r["quantity"])}) for r in rows[:limit]]
    return ProvisioningPage(items=items, next_cursor=encode_cursor(items[-1].id)
                            if len(rows) > limit else None)


@routes.post("/provisioning/{request_id}:provisioned")
def confirm_provisioned(request_id: Annotated[int, Path(ge=1, le=MAX_ID)], uow: Uow,
                        _: Writer) -> ProvisioningOut:
    """The provisioning system confirms the work of a dispatched request is done (a repeat
    answers the same; any other state is a 409 naming it)."""
    provisioning.mark_provisioned(uow, request_id)
    row = provisioning.get_request(uow.conn, request_id)
    return ProvisioningOut(**{**row, "quantity": str(row["quantity"])})


@routes.post("/provisioning/{request_id}:retry")
def retry_provisioning(request_id: Annotated[int, Path(ge=1, le=MAX_ID)], uow: Uow,
                       _: Admin) -> ProvisioningOut:
    """Put a failed request back in the queue with its own key (it waits while on hold)."""
    provisioning.retry_request(uow, request_id)
    row = provisioning.get_request(uow.conn, request_id)
    return ProvisioningOut(**{**row, "quantity": str(row["quantity"])})
