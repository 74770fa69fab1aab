"""The demo's metered-usage step: a usage system sends events through the real HTTP API.

``ledgerbridge demo`` (:mod:`jobs.cli.demo_crm`) calls :func:`metered_usage_step` for one
account: it defines a metric (``api_calls``: ``sum`` of the events' values, grouped by
``region``, on a graduated usage product), starts the API on a loopback port with a
``billing:write`` token, POSTs :data:`EVENTS` events dated in the current bill period (one
of them twice, answered ``duplicate``), and shows the account's next invoice as a dry run of
the bill run on the period's end. The usage lines are checked against figures worked here from
the events themselves (sum per region, the tiers); a difference is reported as a problem (the
demo then exits 1), never told as true.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import requests
from sqlalchemy import Engine

from billing_core.domain.money import from_minor, to_minor
from billing_core.service import ledger_uow
from billing_core.service.bill_run import run_bill_run
from billing_core.service.pricing import ProductIn, add_product, set_price
from billing_core.service.usage_metrics import set_metric
from config.settings import Settings
from jobs.api.app import build_app, serve_in_thread
from jobs.api.auth import create_token

EVENTS = 300
#: graduated: the first 100 units of a region at 0.05, the rest at 0.02
TIERS = [("100", "0.05"), (None, "0.02")]
#: half the events from eu-west, a third from us-east, a sixth from ap-south
REGIONS = ("eu-west", "us-east", "eu-west", "us-east", "eu-west", "ap-south")


def _worked(units: Decimal, currency: str) -> int:
    first = min(units, Decimal(100))
    return to_minor(first * Decimal("0.05") + (units - first) * Decimal("0.02"), currency)


def metered_usage_step(engine: Engine, settings: Settings, acc: dict[str, Any],
                       period: tuple[date, date], say: Callable[[str], None]) -> dict[str, Any]:
    """Ingest EVENTS events for ``acc`` through the API; show and check its next invoice's
    usage lines. Returns the facts (``problems``: what did not hold)."""
    start, end = period
    cur = str(acc["currency"])
    problems: list[str] = []
    with ledger_uow(engine) as uow:
        pid = add_product(uow, ProductIn(sku="DEMO-API-CALLS", name="API calls", kind="usage",
                                         pricing_model="graduated"))
        set_price(uow, pid, cur, date(2000, 1, 1), None, tiers=TIERS)
        set_metric(uow, "api_calls", aggregation="sum", product=pid, group_by="region",
                   description="API calls by region")
        token = create_token(uow, "demo-usage-system", ["billing:write"])[1]
        uow.commit()
    first = datetime.combine(start, time(), tzinfo=UTC)
    span = (end - start).days * 86_400 - 1
    ref = str(acc["ext_id"] or acc["id"])        # the CRM id, as a usage system knows it
    events: list[dict[str, Any]] = [
        {"event_id": f"demo-usage-{i:04d}", "account": ref, "metric": "api_calls",
         "timestamp": (first + timedelta(seconds=i * span // EVENTS)).isoformat(),
         "value": str(1 + i % 5), "properties": {"region": REGIONS[i % 6]}}
              for i in range(EVENTS)]
    server = serve_in_thread(build_app(engine, settings), "127.0.0.1", 0)
    try:
        port = server.server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/usage/events"
        headers = {"Authorization": f"Bearer {token}"}
        answer = requests.post(url, json={"events": events}, headers=headers, timeout=60).json()
        again = requests.post(url, json={"events": events[:1]}, headers=headers, timeout=60).json()
    finally:
        server.stop()
    say(f"   POST /usage/events: {EVENTS} events -> {answer.get('accepted')} accepted; the "
        f"first sent again -> {again.get('results', [{}])[0].get('status')}")
    if answer.get("accepted") != EVENTS or again.get("duplicates") != 1:
        problems.append(f"the API answered {answer.get('accepted')} accepted (want {EVENTS}) "
                        f"and {again.get('duplicates')} duplicate (want 1)")
    per_region: dict[str, Decimal] = {}
    for e in events:
        region = e["properties"]["region"]
        per_region[region] = per_region.get(region, Decimal(0)) + Decimal(e["value"])
    want = sorted(_worked(units, cur) for units in per_region.values())
    result = run_bill_run(engine, end, dry_run=True, series=settings.billing.invoice_series,
                          tax_inclusive=settings.billing.tax_inclusive)
    mine = [i for i in result.invoices if i.account_id == acc["id"]]
    say(f"   {acc['name']}'s next invoice, the bill run on {end} (a dry run, nothing written):")
    got = []
    for inv in mine:
        for ln in inv.line_items:
            say(f"     - {ln.description}: {from_minor(ln.amount_minor, cur)} {cur}")
            if "[api_calls" in ln.description:
                got.append(ln.amount_minor)
    worked = ", ".join(f"{r} {u:f} units -> {from_minor(_worked(u, cur), cur)}"
                       for r, u in sorted(per_region.items()))
    say(f"   worked from the events (first 100 units of a region at 0.05, the rest at 0.02): "
        f"{worked} {cur}")
    if sorted(got) != want:
        problems.append(f"the usage lines (minor units) {sorted(got)} are not the worked {want}")
    else:
        say("   the usage lines match the worked figures to the cent, one line per region.")
    return {"accepted": answer.get("accepted"), "usage_lines": sorted(got),
            "problems": problems}
