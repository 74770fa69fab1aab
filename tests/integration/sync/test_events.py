"""CRM change events (issue 17): the receivers store each event once, durably, before they
answer, and refuse forged ones; the targeted resync reads the named records back from the CRM
(coalesced per record, batched) and applies them through the cycle's own path. On SQLite and
PostgreSQL (``engine``)."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from events_config import (
    DV_KEY,
    HMAC_ENV,
    HMAC_SECRET,
    KEY_ENV,
    ORG,
    events_config,
    events_settings,
)
from fake_crm import CountingCRM, FakeCRM
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from billing_core.adapters.tables import accounts, provisioning_requests
from config.settings import load_settings
from jobs.api.app import build_app
from jobs.worker import Worker
from sync import inbox
from sync.engine import SyncOptions, run_cycle
from sync.tables import event_inbox, sync_records

DV_ACCOUNT = "7d5e8f10-3a2b-4c1d-9e8f-0a1b2c3d4e5f"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    return events_settings(tmp_path, monkeypatch)


@pytest.fixture
def client(engine: Engine, settings: Any) -> TestClient:
    return TestClient(build_app(engine, settings))


def _stored(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(event_inbox).order_by(event_inbox.c.id))
                .mappings()]


# -- the wire formats -----------------------------------------------------------------------
def dataverse_context(entity: str = "account", entity_id: str = DV_ACCOUNT,
                      message: str = "Update",
                      operation: str = "a2b3c4d5-0000-4000-8000-000000000001") -> dict[str, Any]:
    """A ``RemoteExecutionContext`` as the Dataverse webhook docs show it (Update of an
    account, asynchronous post-operation step), trimmed of nothing the receiver reads."""
    return {
        "BusinessUnitId": "e2d8c9b4-3d6a-e711-8102-e0071b6ac161",
        "CorrelationId": "9e6b0c3f-2c5d-4a35-9b8a-1d4f8e2a7c11",
        "Depth": 1,
        "InitiatingUserAzureActiveDirectoryObjectId": "00000000-0000-0000-0000-000000000000",
        "InitiatingUserId": "75c2dad9-3d6a-e711-8102-e0071b6ac161",
        "InputParameters": [{"key": "Target", "value": {
            "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
            "Attributes": [{"key": "creditonhold", "value": True},
                           {"key": "accountid", "value": entity_id}],
            "EntityState": None, "FormattedValues": [], "Id": entity_id,
            "KeyAttributes": [], "LogicalName": entity, "RelatedEntities": [],
            "RowVersion": None}}],
        "IsExecutingOffline": False, "IsInTransaction": False, "IsOfflinePlayback": False,
        "IsolationMode": 1, "MessageName": message, "Mode": 1,
        "OperationCreatedOn": "/Date(1495810546000+0000)/", "OperationId": operation,
        "OrganizationId": "e2d8c9b4-3d6a-e711-8102-e0071b6ac161",
        "OrganizationName": "OrgName", "OutputParameters": [],
        "OwningExtension": {"Id": "07ac9b18-7d42-e711-8102-e0071b6ac161",
                            "KeyAttributes": [], "LogicalName": "sdkmessageprocessingstep",
                            "Name": "ledgerbridge: account update", "RowVersion": None},
        "ParentContext": None, "PostEntityImages": [], "PreEntityImages": [],
        "PrimaryEntityId": entity_id, "PrimaryEntityName": entity, "RequestId": None,
        "SecondaryEntityName": "none", "SharedVariables": [], "Stage": 40,
        "UserAzureActiveDirectoryObjectId": "00000000-0000-0000-0000-000000000000",
        "UserId": "75c2dad9-3d6a-e711-8102-e0071b6ac161",
    }


def outbound_message(org: str, notes: list[tuple[str, str, str]]) -> bytes:
    """A Salesforce outbound message: (notification id, sObject type, record id) each."""
    body = "".join(
        f"<Notification><Id>{nid}</Id><sObject xsi:type=\"sf:{kind}\" "
        f"xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\"><sf:Id>{rid}</sf:Id>"
        f"<sf:Credit_Hold__c>false</sf:Credit_Hold__c></sObject></Notification>"
        for nid, kind, rid in notes)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org}</OrganizationId><ActionId>04k5g000000Kz9AAAS</ActionId>"
        '<SessionId xsi:nil="true"/>'
        "<EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/59.0/00D5g000004XyZa"
        "</EnterpriseUrl><PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/59.0/"
        f"00D5g000004XyZa</PartnerUrl>{body}</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


def _signed(payload: dict[str, Any], secret: str = HMAC_SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(payload).encode()
    sig = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return raw, {"X-Signature": sig, "Content-Type": "application/json"}


# -- receivers ------------------------------------------------------------------------------
def test_forged_events_are_refused_with_401_and_nothing_is_stored(client, engine):
    ctx = json.dumps(dataverse_context()).encode()
    assert client.post("/events/dataverse/dv", content=ctx).status_code == 401
    assert client.post("/events/dataverse/dv?code=wrong", content=ctx).status_code == 401
    soap = client.post("/events/salesforce/sf", content=outbound_message(
        "00D000000000001AAA", [("04l0000000000001", "Account", "001000000000001AAA")]))
    assert soap.status_code == 401 and b"Fault" in soap.content
    raw, headers = _signed({"sobject": "Account", "ids": ["001000000000001AAA"]}, "forged")
    assert client.post("/events/salesforce/sf/json", content=raw,
                       headers=headers).status_code == 401
    raw, headers = _signed({"sobject": "Account", "ids": ["001000000000001AAA"]})
    headers.pop("X-Signature")
    assert client.post("/events/salesforce/sf/json", content=raw,
                       headers=headers).status_code == 401
    # a connection without events, or unknown, takes none
    assert client.post("/events/salesforce/nope", content=b"").status_code == 404
    assert _stored(engine) == []


def test_a_dataverse_event_is_stored_once_and_read_from_the_official_shape(client, engine):
    ctx = json.dumps(dataverse_context()).encode()
    first = client.post(f"/events/dataverse/dv?code={DV_KEY}", content=ctx)
    again = client.post(f"/events/dataverse/dv?code={DV_KEY}", content=ctx)
    assert first.status_code == again.status_code == 200
    assert first.json() == {"received": 1, "stored": 1, "duplicates": 0, "ignored": 0,
                            "skipped": 0}
    assert again.json() == {"received": 1, "stored": 0, "duplicates": 1, "ignored": 0,
                            "skipped": 0}
    rows = _stored(engine)
    assert [(r["connection"], r["source"], r["object"], r["crm_id"], r["action"], r["state"],
             r["event_id"]) for r in rows] == [
        ("dv", "dataverse", "account", DV_ACCOUNT, "Update", "new",
         "a2b3c4d5-0000-4000-8000-000000000001")]


def test_a_dataverse_product_event_names_both_objects_the_map_reads_from_the_table(client,
                                                                                  engine):
    pid = "11111111-2222-4333-8444-555555555555"
    ctx = json.dumps(dataverse_context("product", pid, "Create")).encode()
    assert client.post(f"/events/dataverse/dv?code={DV_KEY}", content=ctx).json()["stored"] == 2
    assert sorted(r["object"] for r in _stored(engine)) == ["price", "product"]
    # a table the map does not hold: acknowledged, nothing stored
    ctx = json.dumps(dataverse_context("contact", pid, "Update", str(uuid.uuid4()))).encode()
    answer = client.post(f"/events/dataverse/dv?code={DV_KEY}", content=ctx)
    assert answer.status_code == 200 and answer.json()["ignored"] == 1
    assert len(_stored(engine)) == 2


def test_a_salesforce_outbound_message_is_stored_then_acknowledged_in_soap(client, engine):
    message = outbound_message(ORG, [("04l5g00000AbCdEAAV", "Account", "001000000000001AAA"),
                                     ("04l5g00000AbCdFAAV", "Quote", "0Q0000000000001AAA")])
    answer = client.post("/events/salesforce/sf", content=message,
                         headers={"Content-Type": "text/xml; charset=utf-8"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    root = ElementTree.fromstring(answer.content)
    soap = "{http://schemas.xmlsoap.org/soap/envelope/}"
    ack = root.find(f"{soap}Body/{{http://soap.sforce.com/2005/09/outbound}}"
                    "notificationsResponse/{http://soap.sforce.com/2005/09/outbound}Ack")
    assert ack is not None and ack.text == "true"
    # Salesforce re-sends until it gets the Ack: the same notifications are not stored twice
    assert client.post("/events/salesforce/sf", content=message).status_code == 200
    assert [(r["event_id"], r["object"], r["crm_id"]) for r in _stored(engine)] == [
        ("04l5g00000AbCdEAAV", "account", "001000000000001AAA"),
        ("04l5g00000AbCdFAAV", "quote", "0Q0000000000001AAA")]


def test_a_signed_json_callout_is_stored_once_per_event_id(client, engine):
    raw, headers = _signed({"sobject": "Account", "event_id": "flow-42",
                            "ids": ["001000000000001AAA", "001000000000002AAA"]})
    for _ in range(2):
        answer = client.post("/events/salesforce/sf/json", content=raw, headers=headers)
        assert answer.status_code == 200
    assert [r["event_id"] for r in _stored(engine)] == ["flow-42:001000000000001AAA",
                                                        "flow-42:001000000000002AAA"]
    bad, headers = _signed({"sobject": "Account", "ids": ["not an id"]})
    assert client.post("/events/salesforce/sf/json", content=bad,
                       headers=headers).status_code == 400
    assert len(_stored(engine)) == 2



def test_a_long_callout_event_id_keeps_each_record_s_event(client, engine):
    """An ``event_id`` (or Idempotency-Key) long enough that ``<event_id>:<id>`` passes the
    inbox column's width must still give each record its own event: cut to the width, the ids
    of one org (which share their first characters) became one event id, and every record but
    the first was answered as a duplicate and never read back."""
    long_id = "flow-run-" + "x" * 150
    ids = ["001000000000001AAA", "001000000000002AAA", "001000000000003AAA"]
    raw, headers = _signed({"sobject": "Account", "event_id": long_id, "ids": ids})
    first = client.post("/events/salesforce/sf/json", content=raw, headers=headers)
    assert first.status_code == 200
    assert first.json() == {"received": 3, "stored": 3, "duplicates": 0, "ignored": 0,
                            "skipped": 0}
    again = client.post("/events/salesforce/sf/json", content=raw, headers=headers)
    assert again.json()["duplicates"] == 3                 # a re-send is still recognised
    rows = _stored(engine)
    assert sorted(r["crm_id"] for r in rows) == ids
    assert len({r["event_id"] for r in rows}) == 3
    assert all(len(r["event_id"]) <= 160 for r in rows)


def test_an_empty_secret_in_the_secrets_file_authenticates_nothing(engine, tmp_path,
                                                                    monkeypatch, caplog):
    """A webhook key or HMAC secret read as "" from the secrets file (a placeholder left
    empty) is a connection whose events cannot be authenticated: 503 naming the connection,
    nothing stored. It was taken as the key: a request with no key at all (and a callout
    signed with the empty key) matched it and was stored."""
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('webhook_key = ""\nhmac_secret = ""\n', encoding="utf-8")
    secrets.chmod(0o600)
    monkeypatch.setenv("NOPE", "unused")
    cfg = tmp_path / "events.toml"
    cfg.write_text(events_config().replace(f'"env:{KEY_ENV}"', '"file:webhook_key"')
                   .replace(f'"env:{HMAC_ENV}"', '"file:hmac_secret"')
                   .replace('crm = "dynamics"\n', f'crm = "dynamics"\nsecrets_file = "{secrets}"\n')
                   .replace('crm = "salesforce"\n',
                            f'crm = "salesforce"\nsecrets_file = "{secrets}"\n'),
                   encoding="utf-8")
    client = TestClient(build_app(engine, load_settings(cfg)))
    ctx = json.dumps(dataverse_context()).encode()
    for url in ("/events/dataverse/dv", "/events/dataverse/dv?code="):
        answer = client.post(url, content=ctx)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["value"] == "dv"
    raw, headers = _signed({"sobject": "Account", "ids": ["001000000000001AAA"]}, "")
    answer = client.post("/events/salesforce/sf/json", content=raw, headers=headers)
    assert answer.status_code == 503 and answer.json()["error"]["value"] == "sf"
    assert _stored(engine) == []


def test_an_id_with_a_trailing_newline_is_not_a_guid_or_a_salesforce_id(client, engine):
    """``$`` matches before a final newline: ``"<guid>\\n"`` and ``"001...AAA\\n"`` passed
    the id checks and were stored (200), for the read-back to put them into the CRM query of
    their batch. They are not ids: 400 naming the field and the value, nothing stored."""
    ctx = dataverse_context(entity_id=DV_ACCOUNT + "\n")
    answer = client.post(f"/events/dataverse/dv?code={DV_KEY}", content=json.dumps(ctx))
    assert answer.status_code == 400, answer.text
    assert "PrimaryEntityId" in answer.json()["error"]["message"]
    assert repr(DV_ACCOUNT + "\n") in answer.json()["error"]["message"]
    raw, headers = _signed({"sobject": "Account", "ids": ["001000000000001AAA\n"]})
    answer = client.post("/events/salesforce/sf/json", content=raw, headers=headers)
    assert answer.status_code == 400, answer.text
    assert "'001000000000001AAA\\n'" in answer.json()["error"]["message"]
    raw, headers = _signed({"sobject": "Account", "ids": ["001000000000001AAA"],
                            "modified_by": "0055g00000ABCDEAA1\n"})
    assert client.post("/events/salesforce/sf/json", content=raw,
                       headers=headers).status_code == 400
    assert _stored(engine) == []


def test_a_chunked_body_over_the_limit_is_413_without_an_error_in_the_log(client, engine,
                                                                         caplog):
    """A body sent in chunks (no Content-Length) is cut off by the API's body limit while
    the receiver reads it. The client got its 413, but the receiver's read failed with
    Starlette's ClientDisconnect, logged as an unexpected error with its traceback (and
    counted as a 500): anyone could write tracebacks into the daemon's log at will."""

    def chunks():
        for _ in range(20):
            yield b"a" * 65536

    caplog.set_level(logging.INFO)
    for url in (f"/events/dataverse/dv?code={DV_KEY}", "/events/salesforce/sf",
                "/events/salesforce/sf/json"):
        answer = client.post(url, content=chunks())
        assert answer.status_code == 413, url
        assert answer.json()["error"]["code"] == "body_too_large"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not any(r.exc_info for r in caplog.records)
    assert _stored(engine) == []


def test_a_receiver_s_resolved_secrets_never_show_in_its_repr(sqlite_engine, settings):
    """What a connection's receivers resolve once (``routes_events._receiver``) holds the
    webhook key and the HMAC secret in clear: its repr (a traceback with locals, a debug
    line) printed both. Secrets never show in a repr."""
    from starlette.requests import Request

    from jobs.api import routes_events

    app = build_app(sqlite_engine, settings)
    request = Request({"type": "http", "app": app, "headers": [], "query_string": b""})
    for connection, crm in (("dv", "dynamics"), ("sf", "salesforce")):
        receiver = routes_events._receiver(request, connection, crm)
        assert receiver.key == (DV_KEY if crm == "dynamics" else None)
        shown = repr(receiver) + str(receiver)
        assert DV_KEY not in shown and HMAC_SECRET not in shown, shown

class _Runner:
    """The API's sync runner as far as the receivers ask it: which CRM user each connection
    acts as (``Worker.own_user``)."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def own_user(self, name: str) -> str | None:
        return self.users.get(name)

    def start(self, *args: Any) -> int:
        raise AssertionError("not used")

    def get(self, run_id: int) -> None:
        return None


US_DV = "75c2dad9-3d6a-e711-8102-e0071b6ac161"
US_SF = "0055g00000ABCDEAA1"


def test_the_echo_of_our_own_writes_is_stored_skipped_and_never_read(engine, settings):
    """Events whose only modifier is the connection's own user are stored ``skipped`` (counted,
    recognised when re-sent) and never claimed; a person's event of the same record, and an
    event naming no modifier, are read (one read: the record)."""
    client = TestClient(build_app(engine, settings,
                                  sync_runner=_Runner({"dv": US_DV, "sf": US_SF})))
    person = "11111111-2222-4333-8444-555555555555"
    ours = json.dumps(dataverse_context()).encode()          # UserId = InitiatingUserId = us
    answer = client.post(f"/events/dataverse/dv?code={DV_KEY}", content=ours)
    assert answer.json()["skipped"] == 1
    theirs = dataverse_context(operation=str(uuid.uuid4()))
    theirs["UserId"] = theirs["InitiatingUserId"] = person
    assert client.post(f"/events/dataverse/dv?code={DV_KEY}",
                       content=json.dumps(theirs).encode()).json()["skipped"] == 0
    raw, headers = _signed({"sobject": "Account", "event_id": "flow-1",
                            "ids": ["001000000000001AAA", "001000000000002AAA"],
                            "modified_by": {"001000000000001AAA": US_SF}})
    assert client.post("/events/salesforce/sf/json", content=raw,
                       headers=headers).json()["skipped"] == 1
    rows = {(r["connection"], r["crm_id"], r["state"]) for r in _stored(engine)}
    assert rows == {("dv", DV_ACCOUNT, "skipped"), ("dv", DV_ACCOUNT, "new"),
                    ("sf", "001000000000001AAA", "skipped"),
                    ("sf", "001000000000002AAA", "new")}
    assert all(r["processed_at"] is not None for r in _stored(engine) if r["state"] == "skipped")
    claim = inbox.claim(engine, "dv", datetime.now(UTC), keys=100)
    assert claim.records == {"account": [DV_ACCOUNT]} and len(claim.event_ids) == 1
    with engine.connect() as conn:
        assert inbox.depth(conn, datetime.now(UTC))["by_state"]["skipped"] == 2


# -- the targeted resync --------------------------------------------------------------------
# The rounds below wait for the connection's lock (``wait=True``): on PostgreSQL the job locks
# are advisory locks of the whole database, which a concurrent test process may hold a moment.
def _worker(engine: Engine, settings: Any, crm: FakeCRM) -> Worker:
    return Worker(engine, settings, connector_factory=lambda s: crm)


def _event(crm_id: str, obj: str = "account", event_id: str | None = None) -> inbox.InboxEvent:
    return inbox.InboxEvent(event_id or uuid.uuid4().hex, obj, crm_id, "Update")


def test_ten_thousand_events_of_one_record_are_one_crm_read(engine, settings):
    crm = CountingCRM()
    crm.seed_basic()
    run_cycle(engine, crm, SyncOptions())
    crm.put("account", "A1", name="Acme Renamed")
    now = datetime.now(UTC)
    for start in range(0, 10_000, 1000):
        assert inbox.store(engine, "sf", "salesforce_json",
                           [_event("A1", event_id=f"e{i}") for i in range(start, start + 1000)],
                           now) == 1000
    worker = _worker(engine, settings, crm)
    try:
        reports = worker.process_events(wait=True)
    finally:
        worker.close()
    assert crm.by_ids == [("account", 1)]
    assert [(r.events, r.records, r.outcome) for r in reports] == [(10_000, 1, "ok")]
    with engine.connect() as conn:
        assert conn.execute(select(event_inbox.c.state, func.count()).group_by(
            event_inbox.c.state)).all() == [("done", 10_000)]
        assert conn.execute(select(func.count()).select_from(accounts).where(
            accounts.c.name == "Acme Renamed")).scalar() == 1


def test_a_thousand_records_are_read_two_hundred_at_a_time(engine, settings):
    crm = CountingCRM()
    crm.seed_basic()
    for i in range(1000):
        crm.put("account", f"X{i:04d}", name=f"Customer {i}", currency="USD", country="US",
                credit_limit=Decimal(1000), credit_hold=False)
    inbox.store(engine, "sf", "salesforce_json", [_event(f"X{i:04d}") for i in range(1000)],
                datetime.now(UTC))
    worker = _worker(engine, settings, crm)
    try:
        reports = worker.process_events(wait=True)
    finally:
        worker.close()
    assert crm.by_ids == [("account", 200)] * 5
    assert reports[0].records == 1000 and reports[0].outcome == "ok"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_records).where(
            sync_records.c.object == "account")).scalar() == 1000


def test_clearing_a_credit_hold_releases_and_dispatches_the_held_request(engine, settings):
    """Finance clears A2's hold in the CRM; the event's targeted resync reads A2, lifts the
    ``crm`` hold reason and the waiting provisioning request is dispatched, no poll needed."""
    crm = CountingCRM()
    crm.seed_basic()
    crm.put("account", "A2", credit_hold=True)
    crm.put("quote", "Q1", account_crm_id="A2", status="Accepted", revision=1, number="Q-1",
            start_date=date(2026, 12, 1))
    crm.put("quote_line", "L1", quote_crm_id="Q1", product_crm_id="P1", quantity=Decimal(3),
            unit_price=Decimal(100), start_date=date(2026, 12, 1))
    run_cycle(engine, crm, SyncOptions())
    with engine.connect() as conn:
        assert list(conn.execute(select(provisioning_requests.c.state)).scalars()) == [
            "awaiting_hold_release"]
    crm.put("account", "A2", credit_hold=False)
    crm.put("account", "A2", name="Globex")          # a second event of the same record
    inbox.store(engine, "sf", "salesforce_soap", [_event("A2"), _event("A2")],
                datetime.now(UTC))
    worker = _worker(engine, settings, crm)
    try:
        worker.process_events(wait=True)
    finally:
        worker.close()
    assert crm.by_ids == [("account", 1)]
    with engine.connect() as conn:
        assert list(conn.execute(select(provisioning_requests.c.state)).scalars()) == [
            "dispatched"]


def test_an_event_for_a_record_deleted_in_the_crm_deletes_it_as_the_cycle_does(engine,
                                                                                settings):
    crm = CountingCRM()
    crm.seed_basic()
    run_cycle(engine, crm, SyncOptions())
    crm.delete("account", "A1")
    inbox.store(engine, "sf", "salesforce_soap",
                [inbox.InboxEvent("n1", "account", "A1", "Delete"),
                 inbox.InboxEvent("n2", "account", "NEVER-KNOWN", "Delete")], datetime.now(UTC))
    worker = _worker(engine, settings, crm)
    try:
        [report] = worker.process_events(wait=True)
    finally:
        worker.close()
    assert report.outcome == "ok"
    with engine.connect() as conn:
        gone = dict(conn.execute(select(sync_records.c.crm_id, sync_records.c.deleted_at)
                                 .where(sync_records.c.object == "account")).all())
    assert gone["A1"] is not None and gone["A2"] is None
    assert "NEVER-KNOWN" not in gone          # an id billing never knew changes nothing
    assert {r["state"] for r in _stored(engine)} == {"done"}


def test_a_crm_that_does_not_answer_leaves_the_events_new_for_the_next_round(engine,
                                                                             settings):
    from connectors.base import RetriableError

    class Down(CountingCRM):
        def read_by_ids(self, obj: str, ids: list[str]) -> list[dict[str, Any]]:
            raise RetriableError("503 SERVER_UNAVAILABLE", status=503)

    crm = Down()
    crm.seed_basic()
    inbox.store(engine, "sf", "salesforce_soap", [_event("A1")], datetime.now(UTC))
    worker = _worker(engine, settings, crm)
    try:
        [report] = worker.process_events(wait=True)
    finally:
        worker.close()
    assert (report.outcome, report.cause) == ("failed", "unreachable")
    [row] = _stored(engine)
    assert (row["state"], row["attempts"]) == ("new", 1) and "503" in row["error"]


def test_events_claimed_by_a_process_that_died_are_taken_over(engine, settings):
    """A worker killed after claiming (after the CRM had its answer): the events are still
    there, ``processing`` under a holder that is gone, and the next round takes them over."""
    import socket

    crm = CountingCRM()
    crm.seed_basic()
    inbox.store(engine, "sf", "salesforce_json", [_event("A1"), _event("A2")],
                datetime.now(UTC))
    with engine.begin() as conn:
        conn.execute(event_inbox.update().values(
            state="processing", claimed_by=f"999999999@{socket.gethostname()}/1",
            claimed_at=datetime.now(UTC)))
    worker = _worker(engine, settings, crm)
    try:
        [report] = worker.process_events(wait=True)
    finally:
        worker.close()
    assert (report.events, report.records, report.outcome) == (2, 2, "ok")
    assert {r["state"] for r in _stored(engine)} == {"done"}


def test_the_daemon_runs_the_events_job_only_for_connections_that_take_events(
        sqlite_engine, settings, tmp_path):
    from jobs.scheduler import build_scheduler, job_ids

    worker = _worker(sqlite_engine, settings, CountingCRM())
    try:
        scheduler = build_scheduler(worker)
        assert "events" in job_ids(scheduler)
        assert scheduler.get_job("events").trigger.interval.total_seconds() == 5
    finally:
        worker.close()
    cfg = tmp_path / "plain.toml"
    cfg.write_text('[connections.sf]\ncrm = "salesforce"\nurl = "https://x.example"\n'
                   '[connections.sf.credentials]\nclient_id = "id"\n'
                   'client_secret = "env:NOPE"\n')
    worker = _worker(sqlite_engine, load_settings(cfg), CountingCRM())
    try:
        assert "events" not in job_ids(build_scheduler(worker))
    finally:
        worker.close()


def test_the_daemon_reads_a_stored_event_back_at_once_not_at_its_interval(sqlite_engine,
                                                                         tmp_path,
                                                                         monkeypatch):
    """With the events job's interval at an hour, a callout the API stores wakes the job:
    the account is read back within seconds (``jobs.scheduler.wake_events``)."""
    import socket
    import threading
    import time

    import requests

    from jobs.daemon import run_daemon

    monkeypatch.setenv(HMAC_ENV, HMAC_SECRET)
    monkeypatch.setenv(KEY_ENV, DV_KEY)
    cfg = tmp_path / "d.toml"
    cfg.write_text("[sync]\nevents_interval_seconds = 3600\n" + events_config())
    settings = load_settings(cfg)
    crm = CountingCRM()
    crm.seed_basic()
    worker = _worker(sqlite_engine, settings, crm)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ready = threading.Event()
    daemon = threading.Thread(target=run_daemon, args=(sqlite_engine, settings), kwargs={
        "api": True, "port": port, "worker": worker, "on_ready": lambda w: ready.set()},
        daemon=True)
    daemon.start()
    try:
        assert ready.wait(20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _synced(sqlite_engine):
            time.sleep(0.05)                                  # the start-up sync of sf ran
        from sync.locks import job_lock

        with job_lock(sqlite_engine, "crm:sf", wait=True):   # ... and let go of sf's lock
            pass          # (an event stored while a cycle holds it waits for the next round)
        raw, headers = _signed({"sobject": "Account", "ids": ["001000000000001AAA"],
                                "event_id": "w1"})
        crm.put("account", "001000000000001AAA", name="Woken", currency="USD", country="US",
                credit_limit=Decimal(10), credit_hold=False)
        started = time.monotonic()
        answer = requests.post(f"http://127.0.0.1:{port}/events/salesforce/sf/json",
                               data=raw, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        while time.monotonic() - started < 10 and {r["state"] for r in
                                                    _stored(sqlite_engine)} != {"done"}:
            time.sleep(0.05)
        assert {r["state"] for r in _stored(sqlite_engine)} == {"done"}
        assert crm.by_ids == [("account", 1)]
        assert time.monotonic() - started < 10               # not the interval's hour
    finally:
        worker.stop.set()
        daemon.join(30)


def _synced(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(select(func.count()).select_from(sync_records)).scalar())


def test_an_accepted_quote_s_event_hands_it_off_with_lines_not_yet_announced(engine,
                                                                            settings):
    """The CRM sends the quote's event apart from its lines' events: the round that reads
    the accepted quote reads its lines too, so the hand-off does not find it without lines."""
    from billing_core.adapters.tables import orders
    from sync.tables import quarantine

    crm = CountingCRM()
    crm.seed_basic()
    run_cycle(engine, crm, SyncOptions())
    crm.put("quote", "Q9", account_crm_id="A1", status="Accepted", revision=1, number="Q-9",
            start_date=date(2026, 12, 1))
    crm.put("quote_line", "L9", quote_crm_id="Q9", product_crm_id="P1", quantity=Decimal(2),
            unit_price=Decimal(100), start_date=date(2026, 12, 1))
    inbox.store(engine, "sf", "salesforce_soap", [_event("Q9", "quote")], datetime.now(UTC))
    worker = _worker(engine, settings, crm)
    try:
        [report] = worker.process_events(wait=True)
    finally:
        worker.close()
    assert report.outcome == "ok"
    with engine.connect() as conn:
        assert conn.execute(select(orders.c.source_ref)).scalars().all() == ["sf:Q9:rev1"]
        assert conn.execute(select(func.count()).select_from(quarantine)).scalar() == 0


def test_the_delete_event_of_a_refused_line_hands_its_waiting_quote_off(engine, settings):
    """A line refused from its first read (no bookkeeping row) keeps its accepted quote
    waiting; the CRM's Delete event of that line closes its entry and the event round hands
    the quote off with its other line, without waiting for the next cycle."""
    from billing_core.adapters.tables import orders, subscriptions
    from sync.tables import quarantine

    crm = CountingCRM()
    crm.seed_basic()
    crm.put("quote", "Q9", account_crm_id="A1", status="Accepted", revision=1, number="Q-9",
            start_date=date(2026, 12, 1))
    for line, quantity in (("L9", 2), ("L10", -3)):
        crm.put("quote_line", line, quote_crm_id="Q9", product_crm_id="P1",
                quantity=Decimal(quantity), unit_price=Decimal(100), start_date=date(2026, 12, 1))
    run_cycle(engine, crm, SyncOptions())
    crm.delete("quote_line", "L10")
    inbox.store(engine, "sf", "salesforce_soap",
                [inbox.InboxEvent("d1", "quote_line", "L10", "Delete")], datetime.now(UTC))
    worker = _worker(engine, settings, crm)
    try:
        [report] = worker.process_events(wait=True)
    finally:
        worker.close()
    assert report.outcome == "ok"
    with engine.connect() as conn:
        order = conn.execute(select(orders.c.id, orders.c.source_ref)).one()
        assert order.source_ref == "sf:Q9:rev1"
        assert conn.execute(select(subscriptions.c.quantity).where(
            subscriptions.c.order_id == order.id)).scalars().all() == [2]
        assert dict(conn.execute(select(quarantine.c.crm_id, quarantine.c.status)).all()) == {
            "L10": "resolved", "Q9": "resolved"}


def test_concurrent_stores_take_at_most_the_receivers_share_of_the_pool(engine):
    """16 receivers storing at once hold at most ``RECEIVER_CONNECTIONS`` connections (one on
    SQLite: one writer): the rest wait for a slot rather than open overflow connections, and
    the pool's other connections stay free for the daemon's jobs. Every event is stored."""
    import threading

    from sqlalchemy import event

    held = peak = 0
    guard = threading.Lock()

    def out(*_: Any) -> None:
        nonlocal held, peak
        with guard:
            held += 1
            peak = max(peak, held)

    def back(*_: Any) -> None:
        nonlocal held
        with guard:
            held -= 1

    event.listen(engine, "checkout", out)
    event.listen(engine, "checkin", back)

    def receiver(n: int) -> None:
        for i in range(25):
            inbox.store(engine, "sf", "salesforce_json", [_event(f"R{n:02d}{i:02d}")],
                        datetime.now(UTC))

    try:
        threads = [threading.Thread(target=receiver, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        event.remove(engine, "checkout", out)
        event.remove(engine, "checkin", back)
    assert 1 <= peak <= (inbox.RECEIVER_CONNECTIONS if engine.dialect.name == "postgresql"
                         else 1)
    assert len(_stored(engine)) == 400
