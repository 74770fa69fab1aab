"""Billing contacts and account classes from Dataverse (issue 16, items 3 and 4), against the
sandbox CRM's Dataverse side over HTTPS: the built-in map reads the account's standard
``emailaddress1`` as ``billing_email`` (so documents are emailed with no override), and a
user's map reads the standard option set ``accountcategorycode`` as ``account_class`` through
``choices`` (1 -> preferred, 2 -> standard); an option the choices do not name (3) quarantines
that account alone, naming ``account_class`` and the value.

Figures: 4 sandbox accounts, ``emailaddress1`` = ``ap+ac000000N@example.com`` for account
number ``AC-000000N``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from billing_core.adapters.tables import accounts
from connectors.registry import build_connector
from connectors.settings import parse_connection
from sync.engine import SyncOptions, run_cycle
from sync.tables import quarantine

sandbox_server = pytest.importorskip("connectors.sandbox.server",
                                     reason="sandbox CRM (connectors/sandbox) not available")

CLASSES = """\
[objects.account.fields.account_class]
field = "accountcategorycode"
type = "choice"
choices = { "1" = "preferred", "2" = "standard" }
"""


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with sandbox_server.Sandbox(accounts=4, quotes=1, sides=("dataverse",)) as sbx:
        yield sbx


def _connector(sandbox: Any, overrides: Path | None = None) -> Any:
    dv = sandbox.dataverse
    table: dict[str, Any] = {
        "crm": "dynamics", "url": sandbox.url, "auth": "client_secret", "tenant_id": dv.tenant,
        "authority_host": sandbox.url, "validate_authority": False,
        "ca_bundle": sandbox.ca_bundle,
        "credentials": {"client_id": dv.client_id, "client_secret": "env:SBX_DV_SECRET"}}
    if overrides is not None:
        table["fieldmap_overrides"] = str(overrides)
    return build_connector(parse_connection("d365", table), sleep=lambda s: None,
                           environ={"SBX_DV_SECRET": dv.client_secret})


def _ledger(engine: Engine) -> dict[str, tuple[str | None, str | None]]:
    with engine.connect() as conn:
        return {r.number: (r.billing_email, r.account_class) for r in conn.execute(
            select(accounts.c.number, accounts.c.billing_email, accounts.c.account_class))}


def test_the_built_in_map_reads_the_billing_email(engine: Engine, sandbox: Any) -> None:
    sandbox.reset()
    report = run_cycle(engine, _connector(sandbox), SyncOptions(full=True,
                                                                objects=("account",)))
    assert report.outcome == "ok", report.error
    assert _ledger(engine) == {f"AC-{i:07d}": (f"ap+ac{i:07d}@example.com", None)
                               for i in range(1, 5)}


def test_a_mapped_category_becomes_the_account_class(engine: Engine, sandbox: Any,
                                                     tmp_path: Path) -> None:
    sandbox.reset()
    for index, code in ((0, 1), (1, 2), (2, 3)):
        sandbox.dataverse.admin("update", {"table": "accounts", "index": index,
                                           "values": {"accountcategorycode": code}})
    overrides = tmp_path / "classes.toml"
    overrides.write_text(CLASSES, encoding="utf-8")
    report = run_cycle(engine, _connector(sandbox, overrides),
                       SyncOptions(full=True, objects=("account",)))
    assert report.objects["account"].quarantined == 1
    assert _ledger(engine) == {
        "AC-0000001": ("ap+ac0000001@example.com", "preferred"),
        "AC-0000002": ("ap+ac0000002@example.com", "standard"),
        "AC-0000004": ("ap+ac0000004@example.com", None)}
    with engine.connect() as conn:
        [held] = conn.execute(select(quarantine.c.field, quarantine.c.value,
                                     quarantine.c.reason)).all()
    assert (held.field, held.value) == ("account_class", "3")
    assert "map it with the field's choices" in held.reason
