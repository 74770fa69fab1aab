"""Idempotency-Key: the first answer is stored with the change and replayed; the same key with
another body is 409; error answers replay too; keys belong to a token; two concurrent requests
with one key run the change once."""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select

from billing_core.adapters.tables import credit_memos, debit_memos, payments
from jobs.api.idempotency import STALE_CLAIM
from jobs.api.tables import api_idempotency, api_tokens

MUTATIONS = [
    ("/billing/credit-memos", lambda a: {"account_id": a, "amount": "5.00", "reason": "x"}),
    ("/billing/debit-memos", lambda a: {"account_id": a, "amount": "5.00", "reason": "x"}),
    ("/billing/payments", lambda a: {"account_id": a, "amount": "5.00", "reference": "r1"}),
    ("/billing/credits:grant", lambda a: {"account_id": a, "amount": "5.00", "reason": "x"}),
    ("/billing/credit-memos:activate", lambda a: {"credit_memos": ["1"]}),
    ("/billing/credit-memos:cancel", lambda a: {"credit_memos": ["1"]}),
    ("/billing/credit-memos:unapply", lambda a: {"items": [{"credit_memo": "1"}]}),
    ("/billing/credit-memos:apply", lambda a: {"items": [{"credit_memo": "1", "applications": [
        {"target": "INV-000001", "amount": "1.00"}]}]}),
    ("/billing/debit-memos:activate", lambda a: {"debit_memos": ["1"]}),
    ("/billing/debit-memos:cancel", lambda a: {"debit_memos": ["1"]}),
    ("/billing/invoices:void", lambda a: {"invoices": ["INV-000001"]}),
    ("/billing/payments:apply", lambda a: {"items": [{"payment": "1"}]}),
    ("/billing/credits:convert", lambda a: {"grant_id": 1}),
]


def test_every_mutation_replays_and_refuses_a_reused_key(api, account, invoice):
    """One pass over every POST endpoint (one database setup: the suite stays fast)."""
    for n, (path, body) in enumerate(MUTATIONS):
        payload, key = body(account), f"key-{n}"
        first = api.post(path, payload, key=key)
        again = api.post(path, payload, key=key)
        assert first.status_code < 500, path
        assert again.status_code == first.status_code, path
        assert again.json() == first.json(), path
        assert again.headers["Idempotent-Replayed"] == "true", path
        other = api.post(path, {**payload, "extra": 1}, key=key)
        assert other.status_code == 409, path
        assert other.json()["error"]["code"] == "idempotency_key_reused", path
    admin = [("/accounts/1/hold:place", {"note": "x"}), ("/accounts/1/hold:release", {}),
             ("/sync:run", {"connection": "salesforce"}), ("/provisioning/1:retry", {})]
    for path, payload in admin:
        first = api.post(path, payload, scope="admin", key=path)
        assert first.status_code < 500, (path, first.text)
        assert api.post(path, payload, scope="admin", key=path).json() == first.json()
    assert len(api.sync.started) == 1


def test_replay_writes_once_and_key_order_does_not_matter(api, account):
    body = {"account_id": account, "amount": "5.00", "reference": "r9"}
    first = api.post("/billing/payments", body, key="pay-9")
    reordered = {"reference": "r9", "amount": "5.00", "account_id": account}
    assert api.post("/billing/payments", reordered, key="pay-9").json() == first.json()
    count = api.read(lambda c: c.execute(select(func.count()).select_from(payments)).scalar())
    assert count == 1
    # the same key on another path is another request: refused
    r = api.post("/billing/credit-memos", {"account_id": account, "amount": "5.00",
                                           "reason": "x"}, key="pay-9")
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_reused"


def test_error_answers_are_replayed(api, account):
    body = {"account_id": account, "amount": "5.00", "reason": "x", "currency": "EUR"}
    first = api.post("/billing/credit-memos", body, key="bad-1")
    assert first.status_code == 409
    again = api.post("/billing/credit-memos", body, key="bad-1")
    assert again.status_code == 409 and again.headers["Idempotent-Replayed"] == "true"


def test_keys_belong_to_a_token(api, account):
    body = {"account_id": account, "amount": "5.00", "reason": "x"}
    a = api.post("/billing/credit-memos", body, scope="billing:write", key="k")
    b = api.post("/billing/credit-memos", body, scope="admin", key="k")
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


def test_bad_keys_are_400_and_auth_comes_first(api, account):
    body = {"account_id": account, "amount": "5.00", "reason": "x"}
    r = api.post("/billing/credit-memos", body, key="has space")
    assert r.status_code == 400 and r.json()["error"]["field"] == "Idempotency-Key"
    r = api.post("/billing/credit-memos", body, key="x" * 256)
    assert r.status_code == 400
    r = api.client.post("/billing/credit-memos", json=body, headers={"Idempotency-Key": "k"})
    assert r.status_code == 401


def test_concurrent_requests_with_one_key_run_once(api, account):
    body = {"account_id": account, "amount": "7.00", "reason": "race", "activate": True}
    answers: list[tuple[int, dict]] = []
    barrier = threading.Barrier(4)

    def call() -> None:
        barrier.wait()
        r = api.post("/billing/credit-memos", body, key="race-1")
        answers.append((r.status_code, r.json()))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    memos = api.read(lambda c: c.execute(select(func.count()).select_from(credit_memos))
                     .scalar())
    assert memos == 1
    created = [a for s, a in answers if s == 201]
    assert created and all(a == created[0] for a in created)
    assert all(s in (201, 409) for s, _ in answers)


def _pending_claim(api, key: str, age: timedelta) -> None:
    """A claim as a crashed request of the write token leaves it (no answer written)."""
    from jobs.api.idempotency import fingerprint

    def insert_claim(uow):
        token_id = uow.conn.execute(select(api_tokens.c.id).where(
            api_tokens.c.name == "test-admin")).scalar_one()
        uow.conn.execute(insert(api_idempotency).values(
            key=key, token_id=token_id, method_path="POST /sync:run",
            body_hash=fingerprint(b'{"connection": "sf"}'), status_code=0, response_body="",
            created_at=datetime.now(UTC) - age))
    api.run(insert_claim)


def test_a_pending_claim_is_409_in_progress_until_it_goes_stale(api):
    _pending_claim(api, "pending-1", timedelta(seconds=1))
    r = api.post("/sync:run", {"connection": "sf"}, scope="admin", key="pending-1")
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_in_progress"
    assert api.sync.started == []
    _pending_claim(api, "stale-1", STALE_CLAIM + timedelta(minutes=1))
    r = api.post("/sync:run", {"connection": "sf"}, scope="admin", key="stale-1")
    assert r.status_code == 202 and api.sync.started == [("sf", None, False, None)]


def test_a_failing_request_writes_nothing(api, account):
    """A request a ledger rule refuses leaves nothing behind (the unit of work rolls back)."""
    body = {"account_id": account, "amount": "5.00", "reason": "x", "currency": "EUR",
            "activate": True}
    assert api.post("/billing/debit-memos", body).status_code == 409
    count = api.read(lambda c: c.execute(select(func.count()).select_from(debit_memos))
                     .scalar())
    assert count == 0


def test_old_answers_are_purged(api, account):
    from jobs.api.idempotency import KEEP_ANSWERS, purge_answers

    _pending_claim(api, "old-1", KEEP_ANSWERS + timedelta(hours=1))
    api.post("/billing/credit-memos", {"account_id": account, "amount": "1.00",
                                       "reason": "x"}, key="new-1")
    assert api.run(purge_answers) == 1
    keys = api.read(lambda c: [r[0] for r in c.execute(select(api_idempotency.c.key))])
    assert keys == ["new-1"]


def test_a_key_reused_with_a_number_a_float_cannot_tell_apart_is_refused(api, account):
    """``POST /usage/events`` reads JSON numbers as exact decimals: 0.1 and
    0.10000000000000001 are two values to the ledger, though one float. The second body with
    the first's key is 409 ``idempotency_key_reused``, not the first's answer replayed while
    its value is dropped; the same body spelled the same replays."""
    from billing_core.adapters.tables import metered_events
    from billing_core.service.pricing import ProductIn, add_product, set_price

    def go(uow):
        pid = add_product(uow, ProductIn(sku="API", name="API calls", kind="usage"))
        set_price(uow, pid, "USD", datetime(2020, 1, 1).date(), "0.10")
    api.run(go)
    assert api.post("/usage/metrics", {"code": "calls", "aggregation": "sum",
                                       "product": "API"}).status_code == 200

    def send(value: str) -> object:
        raw = ('{"events": [{"event_id": "e1", "account": "ACC1", "metric": "calls", '
               f'"timestamp": "2026-03-02T10:00:00Z", "value": {value}}}]}}')
        return api.client.post("/usage/events", content=raw, headers={
            **api.headers("billing:write", key="usage-1"), "Content-Type": "application/json"})

    first = send("0.1")
    assert first.status_code == 200 and first.json()["accepted"] == 1, first.text
    assert send("0.1").json() == first.json()
    other = send("0.10000000000000001")
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    huge = send("1e400")
    assert huge.status_code == 409, huge.text
    assert api.read(lambda c: c.execute(select(func.count()).select_from(
        metered_events)).scalar()) == 1


def test_a_429_is_not_stored_so_the_retry_with_the_key_runs(api, monkeypatch):
    """``POST /sync:run`` answers 429 ``sync_busy`` with ``Retry-After`` while too many runs
    of the connection are queued. A client that waits and retries with the same
    Idempotency-Key (as it should: the request did not happen) gets its run started, not the
    429 replayed for the 7 days the key is kept."""
    from jobs.api.admin_sync import SyncBusy

    real, busy = api.sync.start, [True]

    def start(connection, object, full, account):
        if busy[0]:
            busy[0] = False
            raise SyncBusy(connection, 4, 7)
        return real(connection, object, full, account)
    monkeypatch.setattr(api.sync, "start", start)
    body = {"connection": "salesforce"}
    refused = api.post("/sync:run", body, scope="admin", key="resync-1")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "7", refused.text
    again = api.post("/sync:run", body, scope="admin", key="resync-1")
    assert again.status_code == 202 or again.status_code == 200, again.text
    assert again.json()["run_id"] == 1
    assert len(api.sync.started) == 1
    replay = api.post("/sync:run", body, scope="admin", key="resync-1")
    assert replay.json() == again.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert len(api.sync.started) == 1
