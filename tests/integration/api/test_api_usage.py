"""Metered usage over HTTP, on SQLite and PostgreSQL: ``POST /usage/events`` (per-event
results, idempotent per event id, JSON numbers read as exact decimals, a batch over the
API's usual 1 MiB body accepted), ``GET`` / ``POST /usage/metrics``."""
from __future__ import annotations

import json
from datetime import date

from sqlalchemy import select

from billing_core.adapters.tables import metered_events
from billing_core.service.bill_run import run_bill_run
from billing_core.service.invoices import list_invoices
from billing_core.service.pricing import ProductIn, add_product, set_price


def _setup(api) -> None:
    def go(uow):
        pid = add_product(uow, ProductIn(sku="API", name="API calls", kind="usage"))
        set_price(uow, pid, "USD", date(2020, 1, 1), "0.10")
    api.run(go)
    r = api.post("/usage/metrics", {"code": "calls", "aggregation": "sum", "product": "API",
                                    "group_by": "region"})
    assert r.status_code == 200, r.text


def test_ingest_over_http_with_per_event_results(api, account) -> None:
    _setup(api)
    assert [m["code"] for m in api.get("/usage/metrics").json()["items"]] == ["calls"]
    # a JSON number arrives as the exact decimal written: 0.1 + 0.2 is 0.3, not 0.30000000004
    raw = ('{"events": ['
           '{"event_id": "e1", "account": "ACC1", "metric": "calls", '
           '"timestamp": "2026-03-02T10:00:00Z", "value": 0.1, "properties": {"region": "eu"}},'
           '{"event_id": "e2", "account": "ACC1", "metric": "calls", '
           '"timestamp": "2026-03-03T10:00:00Z", "value": 0.2, "properties": {"region": "eu"}},'
           '{"event_id": "e3", "account": "ACC1", "metric": "calls", '
           '"timestamp": "2026-03-03T10:00:00", "value": "1"}]}')
    r = api.client.post("/usage/events", content=raw, headers={
        **api.headers("billing:write"), "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, 1)
    assert body["results"][2]["field"] == "timestamp"
    values = api.read(lambda conn: conn.execute(select(metered_events.c.value).order_by(
        metered_events.c.id)).scalars().all())
    assert [str(v.normalize()) for v in values] == ["0.1", "0.2"]
    again = api.client.post("/usage/events", content=raw, headers={
        **api.headers("billing:write"), "Content-Type": "application/json"}).json()
    assert [x["status"] for x in again["results"]] == ["duplicate", "duplicate", "rejected"]
    assert api.post("/usage/events", {"events": []}).status_code == 422
    assert api.post("/usage/events", {"events": [{}]}, scope="billing:read").status_code == 403
    run_bill_run(api.engine, date(2026, 4, 1))
    invs = api.read(lambda conn: list_invoices(conn, account_id=account))
    assert [i["total_minor"] for i in invs] == [3]       # 0.3 x 0.10 = 0.03


def test_a_batch_of_ten_thousand_events_over_the_usual_body_limit(api, account) -> None:
    _setup(api)
    events = [{"event_id": f"big-{i:05d}", "account": "ACC1", "metric": "calls",
               "timestamp": "2026-03-02T10:00:00Z", "value": "1",
               "properties": {"region": "eu", "host": f"host-{i % 50}"}}
              for i in range(10_000)]
    assert len(json.dumps({"events": events})) > 1024 * 1024
    r = api.post("/usage/events", {"events": events})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["accepted"] == 10_000
    too_many = api.post("/usage/events", {"events": events + events[:1]})
    assert too_many.status_code == 422
    assert too_many.json()["error"]["field"] == "body.events"


def _post_raw(api, raw: str | bytes):
    return api.client.post("/usage/events", content=raw, headers={
        **api.headers("billing:write"), "Content-Type": "application/json"})


def _event(eid: str, value: str = '"1"', ts: str = "2026-03-02T10:00:00Z",
           account: str = "ACC1", props: str = "{}") -> str:
    return (f'{{"event_id": "{eid}", "account": "{account}", "metric": "calls", '
            f'"timestamp": "{ts}", "value": {value}, "properties": {props}}}')


def test_an_event_the_ledger_cannot_take_is_rejected_and_the_batch_goes_on(api, account) -> None:
    """A value of 5,000 digits (past Python's int conversion limit), a timestamp out of range
    once in UTC, an account ``int`` cannot read (``²``): that event rejected naming field and
    value, never a 500 losing the batch. A property of 1e999999999 is kept as its text."""
    _setup(api)
    huge = "1" + "0" * 5000
    events = ", ".join([_event("ok-1", props='{"region": "eu", "n": 1e999999999}'),
                        _event("v-1", value=huge),
                        _event("t-1", ts="0001-01-01T00:00:00+01:00"),
                        _event("t-2", ts="9999-12-31T23:59:59-01:00"),
                        _event("a-1", account="\u00b2")])
    raw = f'{{"events": [{events}]}}'
    r = _post_raw(api, raw.encode())
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (1, 4)
    assert [(x["event_id"], x.get("field"), x.get("value")) for x in body["results"]] == [
        ("ok-1", None, None), ("v-1", "value", huge),
        ("t-1", "timestamp", "0001-01-01T00:00:00+01:00"),
        ("t-2", "timestamp", "9999-12-31T23:59:59-01:00"), ("a-1", "account", "\u00b2")]
    props = api.read(lambda conn: conn.execute(select(metered_events.c.properties)).scalar_one())
    assert props == {"region": "eu", "n": "1E+999999999"}


def test_a_body_nested_too_deeply_to_read_is_422_naming_the_body(api, account) -> None:
    _setup(api)
    r = _post_raw(api, b'{"events": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}")
    assert r.status_code == 422, r.text[:300]
    assert r.json()["error"]["field"] == "body"
    assert "nests too deeply" in r.json()["error"]["message"]
    assert api.read(lambda conn: conn.execute(select(metered_events.c.id)).all()) == []
