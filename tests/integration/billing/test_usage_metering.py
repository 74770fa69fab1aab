"""Issue 19: metered usage through ingestion and the bill run, on SQLite and PostgreSQL.
Every figure is worked by hand in the docstrings.

The world: one USD account (bill cycle day 1, tax exempt); a usage product priced per unit
0.10 until 15 March 2026 and 0.20 from 16 March (two price rows in the March usage period);
the bill run of 1 April bills March's usage [1 March, 1 April)."""
from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest
from sqlalchemy import func, select

from billing_core.adapters.tables import audit_log, metered_events, usage_ratings
from billing_core.domain.errors import ValidationError
from billing_core.service.pricing import set_price
from billing_core.service.usage_ingest import ingest_events
from billing_core.service.usage_metrics import list_metrics, set_metric

LADDER = [("1000", "0.10"), ("5000", "0.08"), (None, "0.05")]


def _world(ledger) -> tuple[int, int]:
    acc = ledger.account()
    pid = ledger.product("0.10", kind="usage")
    ledger.price(pid, "0.20", date(2026, 3, 16))
    return acc, pid


def _metric(ledger, code: str, aggregation: str, pid: int, **kw) -> None:
    with ledger.uow() as uow:
        set_metric(uow, code, aggregation=aggregation, product=pid, **kw)
        uow.commit()


def _ingest(ledger, events: list[dict]) -> dict:
    with ledger.uow() as uow:
        result = ingest_events(uow, events, source="test")
        uow.commit()
    return result.as_dict()


def _ev(eid: str, acc: int, metric: str, ts: str, value: str, **props) -> dict:
    return {"event_id": eid, "account": str(acc), "metric": metric, "timestamp": ts,
            "value": value, "properties": props}


# (day and time, region, env, user, value); env "test" is filtered out
EVENTS = [("2026-03-02T10:00:00Z", "eu", "prod", "u1", "5"),
          ("2026-03-05T10:00:00Z", "eu", "prod", "u2", "3"),
          ("2026-03-10T10:00:00Z", "us", "prod", "u1", "4"),
          ("2026-03-12T10:00:00Z", "eu", "test", "u3", "100"),
          ("2026-03-20T10:00:00Z", "eu", "prod", "u1", "7"),
          ("2026-03-25T10:00:00Z", "us", "prod", "u3", "2"),
          ("2026-03-28T10:00:00Z", "us", "prod", "u1", "6"),
          ("2026-03-31T23:00:00Z", "us", "test", "u9", "50"),
          ("2026-04-01T00:30:00Z", "eu", "prod", "u1", "1000"),   # April: next invoice
          ("2026-04-01T01:00:00+02:00", "eu", "prod", "u2", "1")]  # 31 March 23:00 UTC


def test_each_aggregation_with_a_filter_and_groups_across_two_price_rows(ledger) -> None:
    """Filter env=prod, group by region. Price 0.10 up to 15 March, 0.20 from 16 March.
    eu (prod): 5 (2 Mar, u1), 3 (5 Mar, u2) | 7 (20 Mar, u1), 1 (31 Mar 23:00 UTC, u2)
    us (prod): 4 (10 Mar, u1)               | 2 (25 Mar, u3), 6 (28 Mar, u1)
    count:  eu 2 x 0.10 = 0.20, 2 x 0.20 = 0.40;  us 1 x 0.10 = 0.10, 2 x 0.20 = 0.40
    sum:    eu 8 x 0.10 = 0.80, 8 x 0.20 = 1.60;  us 4 x 0.10 = 0.40, 8 x 0.20 = 1.60
    max (one figure, the price on the period's last day, 0.20): eu 7 -> 1.40; us 6 -> 1.20
    unique_count of user: eu {u1, u2} 2 -> 0.40; us {u1, u3} 2 -> 0.40
    latest: eu the 31 March 23:00 event, 1 -> 0.20; us the 28 March one, 6 -> 1.20
    Total 0.20+0.40+0.10+0.40 + 0.80+1.60+0.40+1.60 + 1.40+1.20 + 0.40+0.40 + 0.20+1.20
    = 10.30; the 1 April 00:30 event waits for May."""
    acc, pid = _world(ledger)
    for code, agg in (("c_count", "count"), ("c_latest", "latest"), ("c_max", "max"),
                      ("c_sum", "sum"), ("c_unique", "unique_count")):
        _metric(ledger, code, agg, pid, filters={"env": "prod"}, group_by="region",
                property="user" if agg == "unique_count" else None)
    events = [_ev(f"{code}-{i}", acc, code, ts, value, region=r, env=env, user=u)
              for code in ("c_count", "c_latest", "c_max", "c_sum", "c_unique")
              for i, (ts, r, env, u, value) in enumerate(EVENTS)]
    assert _ingest(ledger, events)["accepted"] == 50
    preview = ledger.run(date(2026, 4, 1), dry_run=True)
    [p] = preview.invoices
    assert "count 2 of 2 events" in p.line_items[0].description    # the dry run's aggregates
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert [(ln["amount_minor"], ln["quantity"].normalize()) for ln in inv["lines"]] == [
        (20, D(2)), (40, D(2)), (10, D(1)), (40, D(2)),         # count eu, us
        (20, D(1)), (120, D(6)),                                  # latest eu, us
        (140, D(7)), (120, D(6)),                                 # max eu, us
        (80, D(8)), (160, D(8)), (40, D(4)), (160, D(8)),         # sum eu, us
        (40, D(2)), (40, D(2))]                                   # unique eu, us
    assert inv["total_minor"] == 1030
    assert "c_sum region=eu" in inv["lines"][8]["description"]
    assert "price from 2026-03-16" in inv["lines"][9]["description"]
    with ledger.uow() as uow:    # every March event marked with the invoice; April's not
        marked = uow.conn.execute(select(func.count()).select_from(metered_events).where(
            metered_events.c.invoice_id == inv["id"])).scalar()
    assert marked == 45
    may = ledger.run(date(2026, 5, 1))
    assert may.invoices_created == 1
    [_, may_inv] = ledger.invoices(acc)
    # 1 April 00:30: 1,000 at 0.20 for count (1 -> 0.20), latest/max/sum (1000 -> 200.00),
    # unique (1 -> 0.20)
    assert [ln["amount_minor"] for ln in may_inv["lines"]] == [20, 20000, 20000, 20000, 20]


def test_tiers_apply_to_the_period_total_across_price_rows(ledger) -> None:
    """BILLING.md rule 6's example through a sum metric: tiers <=1,000 @0.10, <=5,000 @0.08,
    above @0.05, re-entered on 16 March; 3,000 units on 5 March and 4,500 on 20 March:
    rate(7,500) = 100 + 320 + 125 = 545.00, split 3,000/7,500 = 218.00 and 327.00."""
    acc = ledger.account()
    pid = ledger.product(None, kind="usage", model="graduated", tiers=LADDER)
    with ledger.uow() as uow:
        set_price(uow, pid, "USD", date(2026, 3, 16), None, tiers=LADDER)
        uow.commit()
    _metric(ledger, "units", "sum", pid)
    _ingest(ledger, [_ev("t1", acc, "units", "2026-03-05T10:00:00Z", "3000"),
                     _ev("t2", acc, "units", "2026-03-20T10:00:00Z", "4500")])
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 21800), ("usage", 32700)]


def test_a_late_event_and_corrections_become_an_adjustment_on_the_next_invoice(ledger) -> None:
    """Sum by region. March: 10 (5 Mar) at 0.10 + 10 (20 Mar) at 0.20 = 1.00 + 2.00, billed
    on 1 April. Then, after that invoice: a late 5 (10 Mar), a correction of -1 (6 Mar) and
    the 20 March event replaced by 4. March now: 10 + 5 - 1 = 14 at 0.10 = 1.40, 4 at 0.20
    = 0.80, 2.20 in all: the 1 May invoice adjusts March by 2.20 - 3.00 = -0.80 (quantity
    18 - 20 = -2), beside April's 10 (10 Apr) at 0.20 = 2.00: total 1.20. The 1 April
    invoice is unchanged."""
    acc, pid = _world(ledger)
    _metric(ledger, "gb", "sum", pid, group_by="region")
    _ingest(ledger, [_ev("g1", acc, "gb", "2026-03-05T10:00:00Z", "10", region="eu"),
                     _ev("g2", acc, "gb", "2026-03-20T10:00:00Z", "10", region="eu")])
    ledger.run(date(2026, 4, 1))
    [april] = ledger.invoices(acc)
    assert ledger.amounts(april) == [("usage", 100), ("usage", 200)]
    result = _ingest(ledger, [
        _ev("g3", acc, "gb", "2026-03-10T10:00:00Z", "5", region="eu"),
        _ev("g4", acc, "gb", "2026-03-06T10:00:00Z", "-1", region="eu"),
        {**_ev("g5", acc, "gb", "2026-03-20T10:00:00Z", "4", region="eu"), "replaces": "g2"},
        _ev("g6", acc, "gb", "2026-04-10T10:00:00Z", "10", region="eu")])
    assert result["accepted"] == 4
    ledger.run(date(2026, 5, 1))
    [april_again, may] = ledger.invoices(acc)
    assert ledger.amounts(april_again) == [("usage", 100), ("usage", 200)]
    assert april_again["total_minor"] == april["total_minor"] == 300
    adj, usage = may["lines"]
    assert (adj["amount_minor"], adj["quantity"].normalize()) == (-80, D(-2))
    assert adj["period_start"] == date(2026, 3, 1)
    assert "adjustment for usage 2026-03-01 to 2026-03-31" in adj["description"]
    assert (usage["amount_minor"], usage["period_start"]) == (200, date(2026, 4, 1))
    assert may["total_minor"] == 120
    with ledger.uow() as uow:
        adjustments = uow.conn.execute(select(usage_ratings.c.amount_minor).where(
            usage_ratings.c.adjustment)).scalars().all()
    assert adjustments == [-80]
    # nothing more to adjust: June bills nothing for March again
    assert ledger.run(date(2026, 6, 1)).invoices_created == 0


def test_ten_thousand_duplicate_replays_add_nothing(ledger) -> None:
    """10,000 events of 1 unit on 10 March, count metric at 0.10: 1,000.00. The same 10,000
    again: all duplicates, nothing stored, still 1,000.00."""
    acc, pid = _world(ledger)
    _metric(ledger, "calls", "count", pid)
    batch = [_ev(f"d{i}", acc, "calls", "2026-03-10T10:00:00Z", "1") for i in range(10_000)]
    first = _ingest(ledger, batch)
    again = _ingest(ledger, batch)
    assert (first["accepted"], first["duplicates"]) == (10_000, 0)
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 10_000, 0)
    assert {r["status"] for r in again["results"]} == {"duplicate"}
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 100_000)]
    with ledger.uow() as uow:
        assert uow.conn.execute(select(func.count()).select_from(metered_events)).scalar() \
            == 10_000
        batches = uow.conn.execute(select(audit_log.c.changes).where(
            audit_log.c.entity_type == "usage_batch")).scalars().all()
    assert len(batches) == 2       # one audit row per batch, not per event


def test_a_malformed_batch_rejects_each_bad_event_and_accepts_the_rest(ledger) -> None:
    acc, pid = _world(ledger)
    _metric(ledger, "calls", "sum", pid)
    ok = "2026-03-10T10:00:00Z"
    batch = [
        _ev("ok1", acc, "calls", ok, "1.5"),
        {**_ev("", acc, "calls", ok, "1")},                         # no event id
        _ev("b2", 999_999, "calls", ok, "1"),                       # unknown account
        _ev("b3", acc, "nope", ok, "1"),                            # unknown metric
        _ev("b4", acc, "calls", "2026-03-10T10:00:00", "1"),        # no time zone
        {**_ev("b5", acc, "calls", ok, "1"), "value": 1.5},         # a float
        _ev("b6", acc, "calls", ok, "0.0000001"),                   # 7 decimals
        _ev("b7", acc, "calls", ok, "many"),                        # not a number
        {**_ev("b8", acc, "calls", ok, "1"), "properties": [1]},    # not an object
        {**_ev("b9", acc, "calls", ok, "1"), "replaces": "ghost"},  # unknown original
        "not an event",
        _ev("ok1", acc, "calls", ok, "99"),                         # same id again: duplicate
        {**_ev("ok2", acc, "calls", ok, "2"), "value": D("2.25")},  # a JSON number as Decimal
    ]
    result = _ingest(ledger, batch)
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (2, 1, 10)
    assert [(r["index"], r["status"], r.get("field")) for r in result["results"]] == [
        (0, "accepted", None), (1, "rejected", "event_id"), (2, "rejected", "account"),
        (3, "rejected", "metric"), (4, "rejected", "timestamp"), (5, "rejected", "value"),
        (6, "rejected", "value"), (7, "rejected", "value"), (8, "rejected", "properties"),
        (9, "rejected", "replaces"), (10, "rejected", "event"), (11, "duplicate", None),
        (12, "accepted", None)]
    assert "float" in result["results"][5]["message"]
    ledger.run(date(2026, 4, 1))
    [inv] = ledger.invoices(acc)
    assert ledger.amounts(inv) == [("usage", 38)]     # 1.5 + 2.25 = 3.75 x 0.10 = 0.375


def test_metric_definitions_are_checked_dated_and_audited(ledger) -> None:
    acc, pid = _world(ledger)
    seat = ledger.product("5.00")
    with ledger.uow() as uow:
        with pytest.raises(ValidationError) as bad:
            set_metric(uow, "x", aggregation="median", product=pid)
        assert bad.value.field == "aggregation"
        with pytest.raises(ValidationError) as bad:
            set_metric(uow, "x", aggregation="unique_count", product=pid)
        assert bad.value.field == "property"
        with pytest.raises(ValidationError) as bad:
            set_metric(uow, "x", aggregation="sum", product=seat)
        assert bad.value.field == "product"
        set_metric(uow, "calls", aggregation="count", product=pid)
        # from 15 March on (the usage period starting 1 April on): sum instead
        set_metric(uow, "calls", aggregation="sum", product=pid, effective_from="2026-03-15")
        same = set_metric(uow, "calls", aggregation="sum", product=pid,
                          effective_from="2026-03-15")
        uow.commit()
    assert same["changed"] is False
    with ledger.uow() as uow:
        versions = list_metrics(uow.conn, "calls")
    assert [(m["aggregation"], m["effective_from"]) for m in versions] == [
        ("count", date(2000, 1, 1)), ("sum", date(2026, 3, 15))]
    _ingest(ledger, [_ev("v1", acc, "calls", "2026-03-20T10:00:00Z", "5"),
                     _ev("v2", acc, "calls", "2026-04-20T10:00:00Z", "5")])
    ledger.run(date(2026, 4, 1))
    ledger.run(date(2026, 5, 1))
    march, april = ledger.invoices(acc)
    # March is rated by the version in effect on 1 March (count: 1 x 0.20), April by sum
    # (5 x 0.20)
    assert ledger.amounts(march) == [("usage", 20)]
    assert ledger.amounts(april) == [("usage", 100)]
    with ledger.uow() as uow:
        audits = uow.conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.entity_type == "usage_metric")).scalar()
    assert audits == 2


def test_voiding_an_invoice_makes_its_metered_usage_billable_again_once(ledger) -> None:
    """March: 10 units at 0.10 (5 Mar) + 10 at 0.20 (20 Mar) = 3.00 on 1 April. Voided, the
    events are unmarked and its rating stops counting: the run of 1 April again bills the
    same 3.00 as usage (not as an adjustment), once; a third run bills nothing."""
    from billing_core.service.documents import void_invoice

    acc, pid = _world(ledger)
    _metric(ledger, "gb", "sum", pid)
    _ingest(ledger, [_ev("v1", acc, "gb", "2026-03-05T10:00:00Z", "10"),
                     _ev("v2", acc, "gb", "2026-03-20T10:00:00Z", "10")])
    ledger.run(date(2026, 4, 1))
    [first] = ledger.invoices(acc)
    with ledger.uow() as uow:
        void_invoice(uow, first["id"])
        uow.commit()
    assert ledger.run(date(2026, 4, 1)).invoices_created == 1
    live = [i for i in ledger.invoices(acc) if i["status"] != "void"]
    assert [ledger.amounts(i) for i in live] == [[("usage", 100), ("usage", 200)]]
    assert "adjustment" not in live[0]["lines"][0]["description"]
    assert ledger.run(date(2026, 4, 1)).invoices_created == 0


def test_text_with_a_nul_is_rejected_naming_its_field_on_both_databases(ledger) -> None:
    """PostgreSQL refuses a NUL in a text parameter: an event id, account, metric or replaces
    holding one crashed the whole batch there (500 from the API fuzz test) instead of being
    rejected alone."""
    acc, pid = _world(ledger)
    _metric(ledger, "calls", "sum", pid)
    ok = "2026-03-10T10:00:00Z"
    batch = [
        _ev("ok\x00", acc, "calls", ok, "1"),
        {**_ev("n2", acc, "calls", ok, "1"), "account": "\x00"},
        _ev("n3", acc, "ca\x00lls", ok, "1"),
        {**_ev("n4", acc, "calls", ok, "1"), "replaces": "x\x00"},
        _ev("n5", acc, "calls", ok, "4", region="e\x00u"),
        {**_ev("n6", acc, "calls", ok, "1"), "properties": {"re\x00gion": "eu"}},
        _ev("n7", acc, "calls", ok, "2", region="eu"),
    ]
    result = _ingest(ledger, batch)
    assert [(r["status"], r.get("field")) for r in result["results"]] == [
        ("rejected", "event_id"), ("rejected", "account"), ("rejected", "metric"),
        ("rejected", "replaces"), ("rejected", "properties.region"),
        ("rejected", "properties"), ("accepted", None)]
    assert "NUL" in result["results"][0]["message"]


@pytest.mark.parametrize(("given", "field"), [
    ({"description": "API\x00calls"}, "description"),
    ({"description": 42}, "description"),
    ({"group_by": "region\n"}, "group_by"),
    ({"filters": {"env": ["pr\x00od"]}}, "filters.env"),
])
def test_a_metric_setting_the_database_could_not_hold_is_refused_naming_it(ledger, given,
                                                                          field) -> None:
    """A NUL (PostgreSQL refuses it in text), a description that is not text (it raised
    AttributeError: a 500 over the API) and a name with a trailing newline (``$`` matched
    before it) are refused with the field, nothing stored."""
    _, pid = _world(ledger)
    with ledger.uow() as uow:
        with pytest.raises(ValidationError) as bad:
            set_metric(uow, "calls", aggregation="sum", product=pid, **given)
    assert bad.value.field == field
    with ledger.uow() as uow:
        assert list_metrics(uow.conn) == []


def test_a_lone_surrogate_is_rejected_like_a_nul_on_both_databases(ledger) -> None:
    """JSON's ``\\ud800`` escape decodes to a lone surrogate, which no database can store
    (UnicodeEncodeError: the batch failed whole); each such event is rejected naming its
    field, the rest accepted."""
    acc, pid = _world(ledger)
    _metric(ledger, "calls", "sum", pid)
    ok = "2026-03-10T10:00:00Z"
    result = _ingest(ledger, [
        _ev("a\ud800", acc, "calls", ok, "1"),
        {**_ev("n2", acc, "calls", ok, "1"), "account": "\udfff"},
        _ev("n3", acc, "calls", ok, "4", region="e\ud800u"),
        {**_ev("n4", acc, "calls", ok, "1"), "properties": {"\ud83d": "x"}},
        _ev("n5", acc, "calls", ok, "2", region="eu"),
    ])
    assert [(r["status"], r.get("field")) for r in result["results"]] == [
        ("rejected", "event_id"), ("rejected", "account"), ("rejected", "properties.region"),
        ("rejected", "properties"), ("accepted", None)]
    with ledger.uow() as uow:
        with pytest.raises(ValidationError) as bad:
            set_metric(uow, "other", aggregation="sum", product=pid,
                       filters={"env": ["pr\udc00od"]})
    assert bad.value.field == "filters.env"
