"""Dataverse "User Local" date-only columns against the sandbox, whose users enter dates in
Europe/Berlin (UTC+1 in winter): quote.effectivefrom and quotedetail.requestdeliveryby arrive
as UTC instants of the local midnight (`2025-12-31T23:00:00Z` for 1 January). A connection
configured with that time zone reads 1 January, into the connector's records and into the
ledger's orders and subscriptions; written back, a date becomes that instant again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from billing_core.adapters.tables import orders, subscriptions
from connectors.registry import build_connector
from connectors.settings import parse_connection
from sync.engine import SyncOptions, run_cycle

sandbox_server = pytest.importorskip("connectors.sandbox.server",
                                     reason="sandbox CRM (connectors/sandbox) not available")

NEW_YEAR = date(2026, 1, 1)
QUOTES = 16
LINES = 3
WON = 2  # quote statecode


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with sandbox_server.Sandbox(accounts=32, sides=("dataverse",)) as sbx:
        sbx.dataverse.admin("set_time_zone", {"time_zone": "Europe/Berlin"})
        yield sbx


@pytest.fixture(autouse=True)
def _clean(sandbox: Any) -> None:
    sandbox.reset()  # the org's time zone survives a reset


def connect(sandbox: Any, **over: Any) -> Any:
    dv = sandbox.dataverse
    raw = {"crm": "dynamics", "url": sandbox.url, "tenant_id": dv.tenant,
           "authority_host": sandbox.url, "validate_authority": False,
           "ca_bundle": sandbox.ca_bundle,
           "credentials": {"client_id": dv.client_id, "client_secret": "env:S"}, **over}
    return build_connector(parse_connection("d365", raw), sleep=lambda s: None,
                           environ={"S": dv.client_secret})


def enter_new_year(sandbox: Any, quote: int) -> str:
    """A Berlin user enters 1 January as the quote's and its lines' start dates."""
    admin = sandbox.dataverse.admin
    guid = admin("guid", {"table": "quotes", "index": quote})["id"]
    admin("set_local_date", {"table": "quotes", "id": guid, "column": "effectivefrom",
                             "date": NEW_YEAR.isoformat()})
    for line in range(quote * LINES, quote * LINES + LINES):
        admin("set_local_date", {"table": "quotedetails", "index": line,
                                 "column": "requestdeliveryby", "date": NEW_YEAR.isoformat()})
    return str(guid)


def test_a_quote_effective_1_january_in_utc_plus_1_reads_1_january(sandbox: Any) -> None:
    guid = enter_new_year(sandbox, 5)
    served = sandbox.dataverse.admin("get", {"table": "quotes", "id": guid})["effectivefrom"]
    assert served == "2025-12-31T23:00:00Z"  # what the wire carries
    berlin = connect(sandbox, time_zone="Europe/Berlin")
    assert berlin.read_one("quote", guid)["start_date"] == NEW_YEAR
    lines = berlin.lookup("quote_line", "quote_crm_id", guid)
    assert [line["start_date"] for line in lines] == [NEW_YEAR] * LINES
    # Left at UTC the connection reads the instant's UTC date: the zone must be configured.
    assert connect(sandbox).read_one("quote", guid)["start_date"] == date(2025, 12, 31)


def test_every_seeded_user_local_date_reads_as_the_date_entered(sandbox: Any) -> None:
    berlin = connect(sandbox, time_zone="Europe/Berlin")
    records = [r for page in berlin.read_changes("quote", None) for r in page.records]
    assert len(records) == QUOTES
    for record in records:
        index = sandbox.dataverse.store.index_of("quotes", record["crm_id"])
        entered = sandbox.dataverse.store.seeder.anchor_date  # seeded dates lie around it
        assert isinstance(record["start_date"], date), record["start_date"]
        assert abs((record["start_date"] - entered).days) <= 60, index


def test_a_user_local_date_written_back_is_its_local_midnight(sandbox: Any,
                                                              tmp_path: Path) -> None:
    overrides = tmp_path / "fields.toml"
    overrides.write_text('[objects.quote.fields]\nbilling_start = { field = "effectivefrom", '
                         'type = "date", behavior = "user_local", push = true }\n',
                         encoding="utf-8")
    conn = connect(sandbox, time_zone="Europe/Berlin", fieldmap_overrides=str(overrides))
    guid = sandbox.dataverse.admin("guid", {"table": "quotes", "index": 7})["id"]
    results = conn.write("quote", [{"crm_id": guid, "billing_start": date(2026, 7, 1)}])
    assert results[0].ok, results
    stored = sandbox.dataverse.admin("get", {"table": "quotes", "id": guid})["effectivefrom"]
    assert stored == "2026-06-30T22:00:00Z"  # local midnight in summer time, UTC+2
    assert conn.read_one("quote", guid)["start_date"] == date(2026, 7, 1)


def test_the_ledger_gets_1_january(sandbox: Any, engine: Engine) -> None:
    """Every won quote entered as 1 January becomes an order and subscriptions starting on
    1 January, not on 31 December."""
    won = [q for q in range(QUOTES) if q % 4 == WON]
    for quote in won:
        enter_new_year(sandbox, quote)
    report = run_cycle(engine, connect(sandbox, time_zone="Europe/Berlin"),
                       SyncOptions(push=False))
    assert not report.outcome.startswith(("failed", "stopped")), report
    with engine.connect() as conn:
        order_dates = conn.execute(select(orders.c.order_date)).scalars().all()
        starts = conn.execute(select(subscriptions.c.start_date)).scalars().all()
    assert order_dates and set(order_dates) == {NEW_YEAR}
    assert starts and set(starts) == {NEW_YEAR}
