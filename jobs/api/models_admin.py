"""Models of the credit-control, admin and ops answers (holds, provisioning, sync, status,
health)."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.api.models import Bool, Model, Text


class HoldReasonOut(BaseModel):
    reason: str = Field(examples=["credit_limit"])
    source: str = Field(examples=["billing"])
    placed_at: datetime
    details: dict[str, Any]


class HoldEvent(BaseModel):
    id: int
    reason: str
    action: str = Field(examples=["placed"])
    actor: str = Field(examples=["admin:ops-script"])
    at: datetime
    details: dict[str, Any]


class HoldOut(BaseModel):
    account_id: int
    on_hold: bool
    reasons: list[HoldReasonOut]
    currency: str = Field(examples=["USD"])
    exposure: str = Field(examples=["1200.00"])
    credit_limit: str | None = Field(None, examples=["1000.00"])
    available_credit: str | None = Field(None, examples=["-200.00"])
    history: list[HoldEvent]


class PlaceHold(Model):
    note: Text = Field(examples=["Disputed invoices: hold until finance reviews"])


class ReleaseHold(Model):
    reason: str = Field("manual", max_length=16, pattern=r"^[a-z_]+$",
                        description="Only 'manual' is released by hand.")


class ProvisioningOut(BaseModel):
    id: int
    account_id: int
    order_id: int
    product_id: int
    quantity: str = Field(examples=["5"])
    state: str = Field(examples=["awaiting_hold_release"])
    attempts: int
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
    subscription_id: int | None = None
    change_kind: str = Field("provision", examples=["decrease"], description=(
        "provision | increase | decrease | deprovision"))
    effective_date: date | None = Field(None, description=(
        "Not dispatched before this day (UTC); null: at once."))


class ProvisioningPage(BaseModel):
    items: list[ProvisioningOut]
    next_cursor: str | None = None


class SyncRequest(Model):
    connection: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$",
                            examples=["salesforce"])
    object: str | None = Field(None, min_length=1, max_length=64,
                               pattern=r"^[A-Za-z0-9_.\-]+$", examples=["account"])
    full: Bool = Field(False, description="Ignore the cursor: read everything again.")
    account: str | None = Field(None, min_length=1, max_length=64,
                                pattern=r"^[A-Za-z0-9_.\-]+$",
                                description="Only this account (CRM id).")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"connection": "salesforce", "object": "account", "full": False}]})


class SyncStarted(BaseModel):
    run_id: int
    status_url: str = Field(examples=["/sync/runs/17"])


class SyncRunOut(BaseModel):
    id: int
    connection: str | None = None
    trigger: str | None = None
    outcome: str = Field(examples=["running"])
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    objects: list[dict[str, Any]] = Field(default_factory=list)


class QuarantineEntryOut(BaseModel):
    """A record the CRM sent that billing could not take, or an accepted quote the hand-off
    could not take (object ``quote``), with the field, value and reason."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 7, "connection": "sf", "object": "quote", "crm_id": "0Q0000000000001",
        "field": "price", "value": "product=3 currency=EUR date=2027-01-01",
        "reason": "does not exist", "attempts": 1, "first_seen": "2027-01-01T06:00:00Z",
        "last_seen": "2027-01-01T07:00:00Z", "status": "open"}]})

    id: int
    connection: str
    object: str
    crm_id: str
    field: str
    value: str | None = None
    reason: str
    attempts: int
    first_seen: datetime
    last_seen: datetime
    status: str


class StatusOut(BaseModel):
    version: str
    database: dict[str, Any]
    scheduler: dict[str, Any]
    holds: dict[str, int]
    provisioning: dict[str, int]
    overview: dict[str, Any] = Field(description="What `ledgerbridge status --json` prints.")


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    checks: dict[str, str] = Field(default_factory=dict)


def jsonable(value: Any) -> Any:
    """Decimals as strings; the rest as it is (pydantic serialises dates)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
