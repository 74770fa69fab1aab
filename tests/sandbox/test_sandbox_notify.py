"""Change events from the sandbox CRM (connectors/sandbox/notify.py) to a loopback receiver.

A plain http.server in a thread plays ledgerbridge's receiving endpoints
(`/events/dataverse/<connection>`, `/events/salesforce/<connection>` and `.../json`); changes
are made through the Web API / REST API and through admin actions, and what arrives is parsed
as the CRMs' real shapes: the Dataverse `RemoteExecutionContext` JSON, the Salesforce outbound
message SOAP envelope (namespaces included) and the signed JSON callout.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from test_dataverse_batch import _changeset, _part

from connectors.sandbox.cli import notify_config, sandbox_command
from connectors.sandbox.notify import NotifyConfig
from connectors.sandbox.remote import RemoteSandbox
from connectors.sandbox.salesforce.auth import ORG_ID
from connectors.sandbox.server import Sandbox
from connectors.sandbox.tls import CABundleSession

NS = {"soapenv": "http://schemas.xmlsoap.org/soap/envelope/",
      "out": "http://soap.sforce.com/2005/09/outbound",
      "sf": "urn:sobject.enterprise.soap.sforce.com",
      "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
ACK = (b'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv='
       b'"http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notificationsResponse '
       b'xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse>'
       b'</soapenv:Body></soapenv:Envelope>')
KEY = "webhook-key-1"
#: The shared sandbox's send timeout: long, so a loaded machine never turns a slow answer of the
#: test receiver into a failed delivery (the tests that need a timeout set their own).
SEND_TIMEOUT = 30.0
SECRET = "hmac-secret-1"


@dataclass
class Received:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def soap(self) -> ET.Element:
        return ET.fromstring(self.body)


class Receiver:
    """A loopback HTTP receiver: records every POST; answers the next planned status (200 by
    default; SOAP posts get the Ack envelope unless `ack` is False). `hold()` makes it hang
    (on paths starting with `hang_prefix`) until `let_go()`; `answered` counts the answers it
    sent, so a test can tell that a CRM call returned while the receiver was still hanging."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []
        self.ack = True
        self.gate = threading.Event()              # set: answer; clear: hang until set
        self.gate.set()
        self.hang_prefix = "/"                     # hang only on paths starting with this
        self.answered = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = urlsplit(self.path)
                with receiver.lock:
                    receiver.received.append(Received(parts.path, parse_qs(parts.query),
                                                      dict(self.headers.items()), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    ack = receiver.ack
                    hang = parts.path.startswith(receiver.hang_prefix)
                if hang:
                    receiver.gate.wait(120)
                soap = "/events/salesforce/" in parts.path and not parts.path.endswith("/json")
                answer = ACK if soap and ack and status == 200 else b"{}"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml" if soap else "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender gave up waiting (a hanging receiver)
                with receiver.lock:
                    receiver.answered += 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def clear(self) -> None:
        self.let_go()
        with self.lock:
            self.received.clear()
            self.statuses.clear()
            self.ack, self.hang_prefix, self.answered = True, "/", 0

    def hold(self, prefix: str = "/") -> None:
        """Hang on every POST to a path starting with `prefix` until `let_go()`."""
        with self.lock:
            self.hang_prefix = prefix
        self.gate.clear()

    def let_go(self) -> None:
        self.gate.set()

    def wait_for(self, cond: Callable[[], bool], what: str) -> None:
        """Until `cond()` holds: a safety net of 60 s against a hang, not a timed assertion."""
        deadline = time.monotonic() + 60
        while not cond():
            assert time.monotonic() < deadline, f"never: {what}"
            time.sleep(0.01)

    def posts(self, kind: str) -> list[Received]:
        """"dataverse", "soap" or "json" posts, in arrival order."""
        with self.lock:
            got = list(self.received)
        if kind == "dataverse":
            return [r for r in got if r.path.startswith("/events/dataverse/")]
        if kind == "json":
            return [r for r in got if r.path.endswith("/json")]
        return [r for r in got if r.path.startswith("/events/salesforce/")
                and not r.path.endswith("/json")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.close()


@pytest.fixture(scope="module")
def notifying(receiver: Receiver) -> Iterator[Sandbox]:
    config = NotifyConfig(url=receiver.url, salesforce_form="both", dataverse_key=KEY,
                          salesforce_query={"token": "sf-token"},
                          hmac_secret=SECRET, timeout=SEND_TIMEOUT, retry_base=0.05,
                          retry_max_interval=0.2, retry_window=60.0)
    with Sandbox(seed=3, accounts=200, notify=config) as sandbox:
        yield sandbox


@pytest.fixture
def box(notifying: Sandbox, receiver: Receiver) -> Sandbox:
    notifying.reset()
    assert notifying.notifier is not None
    notifying.notifier.configure_faults(drop=0, duplicate=0, reorder=0, delay=0)
    receiver.clear()
    return notifying


def flush(sandbox: Sandbox, timeout: float = 60.0) -> dict[str, Any]:
    assert sandbox.notifier is not None
    assert sandbox.notifier.flush(timeout), sandbox.notifier.counters()
    return sandbox.notifier.counters()


def dataverse_token(sandbox: Sandbox) -> str:
    assert sandbox.dataverse is not None
    info = sandbox.dataverse.admin("info", {})
    session = CABundleSession(sandbox.ca_bundle, timeout=(5, 30))
    resp = session.post(f"{sandbox.url}/{info['tenant']}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": info["client_id"],
        "client_secret": info["client_secret"], "scope": info["scope"]})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def attributes(entity: dict[str, Any]) -> dict[str, Any]:
    return {pair["key"]: pair["value"] for pair in entity["Attributes"]}


# --- Dataverse ---------------------------------------------------------------------------------

def test_dataverse_web_api_changes_post_remote_execution_contexts(box: Sandbox,
                                                                 receiver: Receiver) -> None:
    assert box.dataverse is not None
    token = dataverse_token(box)
    api = f"{box.url}/api/data/v9.2"
    http = CABundleSession(box.ca_bundle, timeout=(5, 30))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    guid = box.dataverse.admin("guid", {"table": "accounts", "index": 4})["id"]
    assert box.notifier is not None
    box.notifier.config.timeout = 60              # the held webhook waits, it does not fail
    receiver.hold()                               # the listener hangs until let go
    try:
        resp = http.patch(f"{api}/accounts({guid})", headers=headers,
                          json={"creditonhold": True, "creditlimit": 2500.5})
        assert resp.status_code in (200, 204), resp.text
        created = http.post(f"{api}/accounts", headers=headers, json={"name": "Webhook Ltd"})
        assert created.status_code in (201, 204), created.text
        new_id = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
        assert http.delete(f"{api}/accounts({new_id})", headers=headers).status_code == 204
        # the three API calls were answered while the webhook listener answered nothing: the
        # CRM's requests never wait for its events' delivery
        assert receiver.answered == 0
    finally:
        receiver.let_go()
        box.notifier.config.timeout = SEND_TIMEOUT
    counters = flush(box)
    posts = receiver.posts("dataverse")
    assert [p.json()["MessageName"] for p in posts] == ["Update", "Create", "Delete"]
    assert counters["dataverse"]["acked"] == 3 and counters["dataverse"]["sent"] == 3

    update = posts[0]
    assert update.path == "/events/dataverse/d365" and update.query == {"code": [KEY]}
    assert update.headers["x-ms-dynamics-entity-name"] == "account"
    assert update.headers["x-ms-dynamics-request-name"] == "Update"
    assert update.headers["x-ms-dynamics-organization"] == urlsplit(box.url).netloc
    ctx = update.json()
    who = CABundleSession(box.ca_bundle).get(f"{api}/WhoAmI", headers=headers).json()
    assert ctx["PrimaryEntityName"] == "account" and ctx["PrimaryEntityId"] == guid
    assert ctx["OrganizationId"] == who["OrganizationId"]
    assert ctx["BusinessUnitId"] == who["BusinessUnitId"]
    assert ctx["UserId"] == ctx["InitiatingUserId"] == who["UserId"]
    assert (ctx["Stage"], ctx["Mode"], ctx["Depth"]) == (40, 1, 1)
    for key in ("CorrelationId", "RequestId", "OperationId"):
        assert len(ctx[key]) == 36
    assert ctx["OperationCreatedOn"].startswith("/Date(")
    (param,) = ctx["InputParameters"]
    assert param["key"] == "Target"
    target = param["value"]
    assert target["__type"] == "Entity:http://schemas.microsoft.com/xrm/2011/Contracts"
    assert target["LogicalName"] == "account" and target["Id"] == guid
    attrs = attributes(target)
    assert attrs["creditonhold"] is True and attrs["accountid"] == guid
    assert attrs["creditlimit"] == {"__type": "Money:http://schemas.microsoft.com/xrm/2011/"
                                    "Contracts", "Value": 2500.5}
    assert attrs["modifiedby"]["LogicalName"] == "systemuser"
    assert attrs["modifiedby"]["Id"] == who["UserId"]
    assert attrs["modifiedon"].startswith("/Date(")
    image = ctx["PostEntityImages"][0]["value"]
    assert attributes(image)["name"]          # the whole row after the write

    create = posts[1].json()
    assert create["PrimaryEntityId"] == new_id
    assert create["OutputParameters"] == [{"key": "id", "value": new_id}]
    assert attributes(create["InputParameters"][0]["value"])["name"] == "Webhook Ltd"
    delete = posts[2].json()
    target = delete["InputParameters"][0]["value"]
    assert target["__type"].startswith("EntityReference:") and target["Id"] == new_id
    assert delete["PostEntityImages"] == []


def test_dataverse_admin_actions_post_events(box: Sandbox, receiver: Receiver) -> None:
    assert box.dataverse is not None
    held = box.dataverse.admin("set_creditonhold", {"index": 2, "value": False})
    box.dataverse.admin("set_creditlimit", {"index": 2, "value": "1000.25"})
    box.dataverse.admin("win_quote", {"index": 0})
    flush(box)
    posts = [p.json() for p in receiver.posts("dataverse")]
    assert [(p["PrimaryEntityName"], p["MessageName"]) for p in posts] == [
        ("account", "Update"), ("account", "Update"), ("quote", "Update")]
    assert posts[0]["PrimaryEntityId"] == held["accountid"]
    assert attributes(posts[0]["InputParameters"][0]["value"])["creditonhold"] is False
    assert attributes(posts[1]["InputParameters"][0]["value"])["creditlimit"]["Value"] == 1000.25
    quote = attributes(posts[2]["InputParameters"][0]["value"])
    assert quote["statecode"] == {"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/"
                                  "2011/Contracts", "Value": 2}
    # a person's change: the admin actions are made by the org's user, not the app user
    assert posts[0]["UserId"] != "" and posts[0]["UserId"] == held["_modifiedby_value"]


def test_dataverse_retries_once_on_503_and_fails_on_500(box: Sandbox,
                                                       receiver: Receiver) -> None:
    assert box.dataverse is not None
    receiver.statuses = [503, 200]
    box.dataverse.admin("set_creditonhold", {"index": 1})
    counters = flush(box)["dataverse"]
    assert (counters["sent"], counters["retried"], counters["acked"]) == (2, 1, 1)
    first, second = receiver.posts("dataverse")
    assert first.body == second.body               # the same context, sent again
    receiver.clear()
    receiver.statuses = [500, 200]
    box.dataverse.admin("set_creditonhold", {"index": 1, "value": False})
    counters = flush(box)["dataverse"]
    assert (counters["sent"], counters["failed"], counters["acked"]) == (3, 1, 1)
    assert len(receiver.posts("dataverse")) == 1   # 500: the system job fails, no retry


# --- Salesforce ----------------------------------------------------------------------------------

def test_salesforce_rest_update_posts_outbound_message_and_callout(box: Sandbox,
                                                                  receiver: Receiver) -> None:
    assert box.salesforce is not None
    sf = box.salesforce_client()
    account = box.salesforce.account_id(5)
    sf.Account.update(account, {"Credit_Hold__c": True, "Credit_Limit__c": 1234.5})
    counters = flush(box)["salesforce"]
    assert counters["acked"] == 2 and counters["failed"] == 0
    (soap,) = receiver.posts("soap")
    assert soap.path == "/events/salesforce/sf" and soap.query == {"token": ["sf-token"]}
    assert soap.headers["Content-Type"].startswith("text/xml")
    root = soap.soap()
    assert root.tag == f"{{{NS['soapenv']}}}Envelope"
    note = root.find("soapenv:Body/out:notifications", NS)
    assert note is not None
    assert note.findtext("out:OrganizationId", namespaces=NS) == ORG_ID
    assert note.findtext("out:ActionId", namespaces=NS)
    session = note.find("out:SessionId", NS)
    assert session is not None and session.get(f"{{{NS['xsi']}}}nil") == "true"
    assert (note.findtext("out:EnterpriseUrl", namespaces=NS) or "").startswith(box.url)
    assert (note.findtext("out:PartnerUrl", namespaces=NS) or "").startswith(box.url)
    (notification,) = note.findall("out:Notification", NS)
    assert len(notification.findtext("out:Id", namespaces=NS) or "") == 18
    sobject = notification.find("out:sObject", NS)
    assert sobject is not None and sobject.get(f"{{{NS['xsi']}}}type") == "sf:Account"
    assert sobject.findtext("sf:Id", namespaces=NS) == account
    assert sobject.findtext("sf:Credit_Hold__c", namespaces=NS) == "true"
    assert sobject.findtext("sf:Credit_Limit__c", namespaces=NS) == "1234.50"

    (callout,) = receiver.posts("json")
    assert callout.path == "/events/salesforce/sf/json"
    body = callout.json()
    assert len(body.pop("event_id")) == 36
    # who wrote: the REST API's integration user, as the record's LastModifiedById says
    assert body.pop("modified_by") == sobject.findtext("sf:LastModifiedById", namespaces=NS)
    assert body == {"sobject": "Account", "ids": [account], "event": "updated"}
    expected = hmac.new(SECRET.encode(), callout.body, hashlib.sha256).hexdigest()
    assert callout.headers["X-Signature"] == expected


def test_salesforce_admin_actions_batch_and_deletes(box: Sandbox, receiver: Receiver) -> None:
    assert box.salesforce is not None
    ids = [box.salesforce.account_id(i) for i in range(150)]
    box.salesforce.admin("stamp_together", {"ids": ids, "fields": {"Credit_Hold__c": True}})
    deleted = box.salesforce.admin("delete", {"object": "Account", "id": ids[0]})
    flush(box)
    messages = [p.soap() for p in receiver.posts("soap")]
    notified = [n for m in messages for n in m.iterfind(".//out:Notification", NS)]
    assert all(len(m.findall(".//out:Notification", NS)) <= 100 for m in messages)
    assert len(messages) >= 2                       # 150 notifications need two messages
    got = [n.findtext("out:sObject/sf:Id", namespaces=NS) for n in notified]
    assert got == ids                               # deletes are not outbound messages
    note_ids = [n.findtext("out:Id", namespaces=NS) for n in notified]
    assert len(set(note_ids)) == len(note_ids)      # every notification has its own id
    callouts = [p.json() for p in receiver.posts("json")]
    assert sorted(i for c in callouts if c["event"] == "updated" for i in c["ids"]) == sorted(ids)
    assert [(c["ids"], c["event"]) for c in callouts if c["event"] == "deleted"] == [
        ([deleted["id"]], "deleted")]
    assert len({c["event_id"] for c in callouts}) == len(callouts)


def test_salesforce_retries_until_acked(box: Sandbox, receiver: Receiver) -> None:
    assert box.salesforce is not None and box.notifier is not None
    box.notifier.config.salesforce_json_url = None
    box.notifier.config.salesforce_form = "soap"
    try:
        receiver.statuses = [500, 500, 200]
        box.salesforce.admin("set_hold", {"index": 9})
        counters = flush(box)["salesforce"]
        assert (counters["sent"], counters["retried"], counters["acked"]) == (3, 2, 1)
        bodies = {p.body for p in receiver.posts("soap")}
        assert len(bodies) == 1                     # the same message (same notification id)
        receiver.clear()
        receiver.ack = False                        # a 200 without <Ack>true</Ack> is no ack
        box.salesforce.admin("set_hold", {"index": 9, "hold": False})
        receiver.wait_for(lambda: len(receiver.posts("soap")) >= 2, "sent again without Ack")
        receiver.ack = True
        counters = flush(box)["salesforce"]
        assert counters["acked"] == 2 and len(receiver.posts("soap")) >= 3
    finally:
        box.notifier.config.salesforce_form = "both"


# --- fault injection, counters, admin API ------------------------------------------------------

def _post_image_limit(context: dict[str, Any]) -> Any:
    """The ``creditlimit`` in a webhook's post image: :func:`_changes` writes the change's
    sequence number there, so the order of the writes is known however close in time."""
    [image] = context["PostEntityImages"]
    attributes = {a["key"]: a["value"] for a in image["value"]["Attributes"]}
    limit = attributes["creditlimit"]
    return float(limit["Value"] if isinstance(limit, dict) else limit)


def _changes(sandbox: Sandbox, n: int) -> None:
    assert sandbox.dataverse is not None
    for i in range(n):
        sandbox.dataverse.admin("update", {"table": "accounts", "index": i % 200,
                                           "values": {"creditlimit": 1000 + i}})


def test_fault_injection_proportions_are_seeded(box: Sandbox, receiver: Receiver) -> None:
    assert box.notifier is not None
    admin = CABundleSession(box.ca_bundle, timeout=(5, 180))   # the flush below waits up to 120 s
    url = f"{box.url}/__admin__/notify"
    runs = []
    for _ in range(2):
        box.reset()
        receiver.clear()
        faults = admin.post(f"{url}/faults", json={"drop": 0.3, "duplicate": 0.2,
                                                   "reorder": 0.1, "seed": 11})
        assert faults.status_code == 200
        _changes(box, 600)
        flushed = admin.post(f"{url}/flush", json={"timeout": 120}).json()
        assert flushed["flushed"] is True
        counters = flushed["counters"]["dataverse"]
        posts = receiver.posts("dataverse")
        ops = [p.json()["OperationId"] for p in posts]
        runs.append((counters, len(posts), len(set(ops))))
        assert counters["events"] == 600
        assert 130 <= counters["dropped"] <= 230                   # 30 % of 600 = 180
        kept = 600 - counters["dropped"]
        assert 0.12 * kept <= counters["duplicated"] <= 0.28 * kept  # 20 %
        assert counters["reordered"] >= 0.05 * kept                  # 10 % (one held at a time)
        assert len(posts) == counters["acked"] == kept + counters["duplicated"]
        assert len(set(ops)) == kept                                 # duplicates: same body
        # reordered: the writes (numbered in their credit limit; a millisecond stamp can be
        # shared by the writes a message was swapped with) do not arrive in write order
        firsts = {p.json()["OperationId"]: p.json() for p in reversed(posts)}  # first arrivals
        written = [_post_image_limit(c) for c in sorted(
            firsts.values(), key=lambda c: ops.index(c["OperationId"]))]
        assert written != sorted(written) or counters["reordered"] == 0
    first, second = runs
    for name in ("dropped", "duplicated", "reordered"):
        assert first[0][name] == second[0][name]                     # same seed, same faults
    got = admin.get(url).json()
    assert got["config"]["dataverse_key"] == "***" and got["config"]["drop"] == 0.3
    assert admin.post(f"{url}/reset").json()["counters"]["total"]["events"] == 0


def test_a_hanging_receiver_never_slows_the_crm(receiver: Receiver) -> None:
    """The listener hangs (until let go) on the first webhook: all 40 PATCHes are answered
    while it has answered nothing, the bounded queue refuses what does not fit, and a send the
    listener never answers times out and fails the job."""
    config = NotifyConfig(url=receiver.url, timeout=60, queue_size=20, retry_base=10,
                          retry_window=0)
    receiver.clear()
    receiver.hold()
    try:
        with Sandbox(seed=5, accounts=50, notify=config) as sandbox:
            assert sandbox.dataverse is not None and sandbox.notifier is not None
            token = dataverse_token(sandbox)
            http = CABundleSession(sandbox.ca_bundle, timeout=(5, 30))
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            api = f"{sandbox.url}/api/data/v9.2"
            for i in range(40):
                guid = sandbox.dataverse.admin("guid", {"table": "accounts", "index": i})["id"]
                resp = http.patch(f"{api}/accounts({guid})", headers=headers,
                                  json={"creditonhold": True})
                assert resp.status_code in (200, 204)
            # every PATCH returned while the listener still hung on the first webhook
            assert receiver.answered == 0
            counters = sandbox.notifier.counters()["dataverse"]
            assert counters["overflow"] > 0            # the bounded queue refused the rest
            assert counters["events"] + counters["overflow"] == 40
            receiver.let_go()
            assert sandbox.notifier.flush(60)
            counters = sandbox.notifier.counters()["dataverse"]
            assert counters["failed"] == 0 and counters["acked"] == counters["events"]
            # a listener that never answers within the timeout: the send fails the job
            sandbox.notifier.config.timeout = 0.3
            receiver.hold()
            sandbox.dataverse.admin("set_creditonhold", {"index": 1, "value": False})
            assert sandbox.notifier.flush(60)
            assert sandbox.notifier.counters()["dataverse"]["failed"] == 1
    finally:
        receiver.clear()


def test_a_hanging_salesforce_receiver_does_not_hold_up_dataverse_events(
        box: Sandbox, receiver: Receiver) -> None:
    """The Salesforce listener hangs (until let go, sends wait up to 60 s): a Dataverse change
    made after the Salesforce ones is delivered while they still hang."""
    assert box.salesforce is not None and box.dataverse is not None
    assert box.notifier is not None
    box.notifier.config.timeout = 60
    receiver.hold("/events/salesforce/")
    try:
        for i in range(3):
            box.salesforce.admin("set_hold", {"index": i})
        receiver.wait_for(lambda: bool(receiver.posts("soap") or receiver.posts("json")),
                          "a Salesforce send reached the listener")
        box.dataverse.admin("set_creditonhold", {"index": 1})
        receiver.wait_for(lambda: bool(receiver.posts("dataverse")), "the Dataverse webhook")
        assert not receiver.gate.is_set()             # the Salesforce sends are still hanging
    finally:
        receiver.let_go()
        box.notifier.config.timeout = SEND_TIMEOUT
    flush(box)


def test_a_rolled_back_change_set_sends_nothing(box: Sandbox, receiver: Receiver) -> None:
    """$batch: the change set whose second member fails is rolled back and sends no event
    (Dataverse runs asynchronous steps only for committed work); the next one commits."""
    assert box.dataverse is not None
    token = dataverse_token(box)
    guid = [box.dataverse.admin("guid", {"table": "accounts", "index": i})["id"]
            for i in (3, 4)]
    missing = "00000000-0000-0000-0000-000000000001"
    parts = [_changeset([_part("PATCH", f"accounts({guid[0]})", {"creditonhold": True}, 1),
                         _part("PATCH", f"accounts({missing})", {"creditonhold": True}, 2,
                               {"If-Match": "*"})]),
             _changeset([_part("PATCH", f"accounts({guid[1]})", {"creditonhold": True}, 3)])]
    boundary = f"batch_{uuid.uuid4().hex}"
    body = "".join(f"--{boundary}\r\n{p}" for p in parts) + f"--{boundary}--\r\n"
    http = CABundleSession(box.ca_bundle, timeout=(5, 30))
    resp = http.post(f"{box.url}/api/data/v9.2/$batch", data=body.encode(), headers={
        "Authorization": f"Bearer {token}", "Prefer": "odata.continue-on-error",
        "Content-Type": f"multipart/mixed; boundary={boundary}"})
    assert resp.status_code == 200
    flush(box)
    posts = [p.json()["PrimaryEntityId"] for p in receiver.posts("dataverse")]
    assert posts == [guid[1]]


def test_delay_holds_every_delivery(box: Sandbox, receiver: Receiver) -> None:
    assert box.dataverse is not None and box.notifier is not None
    box.notifier.configure_faults(delay=0.6)
    started = time.monotonic()
    box.dataverse.admin("set_creditonhold", {"index": 7})
    time.sleep(0.3)
    assert receiver.posts("dataverse") == []
    receiver.wait_for(lambda: bool(receiver.posts("dataverse")), "the delayed webhook")
    assert time.monotonic() - started >= 0.6         # never sooner (a lower bound: load-proof)


def test_a_context_over_256_kb_is_trimmed(box: Sandbox, receiver: Receiver) -> None:
    assert box.dataverse is not None and box.notifier is not None
    objects = box.notifier.config.objects
    box.notifier.config.objects = (*objects, "annotations")
    try:
        note = box.dataverse.admin("create", {"table": "annotations", "row": {
            "subject": "big", "documentbody": "QUJD" * 70_000}})
        flush(box)
    finally:
        box.notifier.config.objects = objects
    (post,) = receiver.posts("dataverse")
    assert post.headers["x-ms-dynamics-msg-size-exceeded"] == "true"
    ctx = post.json()
    assert ctx["PrimaryEntityId"] == note["annotationid"] and ctx["InputParameters"] == []
    assert len(post.body) < 256 * 1024


def test_salesforce_selected_fields(box: Sandbox, receiver: Receiver) -> None:
    assert box.salesforce is not None and box.notifier is not None
    box.notifier.config.salesforce_fields = {"Account": ("Credit_Hold__c",)}
    try:
        box.salesforce.admin("set_hold", {"index": 3})
        flush(box)
    finally:
        box.notifier.config.salesforce_fields = {}
    (soap,) = receiver.posts("soap")
    sobject = soap.soap().find(".//out:sObject", NS)
    assert sobject is not None
    assert [child.tag.split("}")[1] for child in sobject] == ["Id", "Credit_Hold__c"]


def test_remote_sandbox_sends_events_from_the_command_line(receiver: Receiver) -> None:
    """`python -m connectors.sandbox --notify URL ...` in a child process (what benchmarks
    run): an admin action's events arrive; the counters are read over the admin API."""
    receiver.clear()
    args = ("--notify", receiver.url, "--notify-salesforce-form", "both",
            "--notify-secret", SECRET, "--notify-seed", "1")
    with RemoteSandbox(seed=2, accounts=20, notify=args) as remote:
        assert remote.salesforce is not None
        held = remote.salesforce.admin("set_hold", {"index": 1})
        assert remote.notify_flush(10)
        counters = remote.notify_counters()["salesforce"]
    assert counters["acked"] == 2
    soap, = receiver.posts("soap")
    assert soap.soap().findtext(".//out:sObject/sf:Id", namespaces=NS) == held["id"]
    callout, = receiver.posts("json")
    assert callout.headers["X-Signature"] == hmac.new(SECRET.encode(), callout.body,
                                                      hashlib.sha256).hexdigest()
    receiver.clear()


def test_admin_api_without_notify_is_404() -> None:
    with Sandbox(seed=1, accounts=5, sides=("salesforce",)) as sandbox:
        admin = CABundleSession(sandbox.ca_bundle, timeout=(5, 30))
        assert admin.get(f"{sandbox.url}/__admin__/notify").status_code == 404


# --- configuration -----------------------------------------------------------------------------

def test_cli_options_build_the_config() -> None:
    result = CliRunner().invoke(sandbox_command, ["--help"])
    assert result.exit_code == 0 and "--notify-dataverse-key" in result.output
    assert notify_config(notify=None) is None
    refused = CliRunner().invoke(sandbox_command, ["--port", "0", "--notify-drop", "0.5"])
    assert refused.exit_code == 2 and "--notify-drop without a target" in refused.output
    bad = CliRunner().invoke(sandbox_command, ["--port", "0", "--notify", "http://x",
                                               "--notify-dataverse-header", "no colon"])
    assert bad.exit_code == 2 and "'NAME: VALUE'" in bad.output
    cfg = notify_config(notify="http://x", notify_dataverse="http://dv/hook",
                        notify_dataverse_header=("x-api-key: abc",),
                        notify_dataverse_query=("tenant=t1",), notify_secret="s",
                        notify_salesforce_form="json", notify_drop=0.25, notify_seed=9)
    assert cfg.target("dataverse") == "http://dv/hook"
    assert cfg.target("soap") is None
    assert cfg.target("json") == "http://x/events/salesforce/sf/json"
    assert cfg.dataverse_headers == {"x-api-key": "abc"}
    assert cfg.dataverse_query == {"tenant": "t1"}
    sf = notify_config(notify="http://x", notify_salesforce_query=("token=t 1",))
    assert sf.salesforce_query == {"token": "t 1"}
    assert (cfg.drop, cfg.fault_seed, cfg.hmac_secret) == (0.25, 9, "s")
    picked = notify_config(notify="http://x", notify_object=("Account", "accounts"),
                           notify_salesforce_fields=("Account=Id, Credit_Hold__c",))
    assert picked.objects == ("Account", "accounts")
    assert picked.salesforce_fields == {"Account": ("Id", "Credit_Hold__c")}
    assert NotifyConfig(url="http://x/").target("soap") == "http://x/events/salesforce/sf"
    with pytest.raises(ValueError, match="drop"):
        NotifyConfig(url="http://x", drop=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        NotifyConfig(url="http://x", batch_size=101)


def test_what_the_sandbox_sends_is_what_ledgerbridge_receives(box: Sandbox,
                                                              receiver: Receiver) -> None:
    """The bodies posted for a hold change on each CRM pass the receiving endpoints' checks
    (connectors/events.py: authentication, organization id, signature) and name the record."""
    from connectors.events import (
        check_dataverse_auth,
        check_signature,
        parse_callout,
        parse_dataverse,
        parse_outbound,
    )

    assert box.salesforce is not None and box.dataverse is not None
    held = box.dataverse.admin("set_creditonhold", {"index": 6})
    box.salesforce.admin("set_hold", {"index": 6})
    flush(box)
    (hook,) = receiver.posts("dataverse")
    headers = {k.lower(): v for k, v in hook.headers.items()}
    check_dataverse_auth("webhook_key", "", KEY, headers, {"code": hook.query["code"][0]})
    event = parse_dataverse(hook.body, headers)
    assert (event.crm_object, event.crm_id, event.action) == ("account", held["accountid"],
                                                              "Update")
    assert event.event_id == hook.json()["OperationId"]
    (soap,) = receiver.posts("soap")
    (note,) = parse_outbound(soap.body, ORG_ID)
    assert (note.crm_object, note.crm_id) == ("Account", box.salesforce.account_id(6))
    (callout,) = receiver.posts("json")
    check_signature(callout.body, SECRET, callout.headers["X-Signature"])
    (item,) = parse_callout(callout.body, {})
    assert (item.crm_object, item.crm_id) == ("Account", box.salesforce.account_id(6))


def test_reset_forgets_pending_events(box: Sandbox, receiver: Receiver) -> None:
    assert box.dataverse is not None and box.notifier is not None
    box.notifier.configure_faults(delay=0.5)
    for i in range(5):
        box.dataverse.admin("set_creditonhold", {"index": i})
    box.reset()                                   # the seed again: nothing of before is sent
    assert box.notifier.flush(5)
    time.sleep(0.6)
    assert receiver.posts("dataverse") == []
    assert box.notifier.counters()["total"]["sent"] == 0


def test_salesforce_gives_up_after_the_retry_window(receiver: Receiver) -> None:
    """Salesforce drops an outbound message it could not deliver for 24 hours; here the window
    is 2 s with retries from 0.25 s doubling (at 0.25, 0.75, 1.75 s: 4 attempts at most; a
    second attempt however slow the first answer, up to 1.75 s)."""
    receiver.clear()
    receiver.statuses = [500] * 50
    config = NotifyConfig(url=receiver.url, retry_base=0.25, retry_max_interval=1.0,
                          retry_window=2.0, timeout=2.0)
    with Sandbox(seed=6, accounts=10, sides=("salesforce",), notify=config) as sandbox:
        assert sandbox.salesforce is not None and sandbox.notifier is not None
        sandbox.salesforce.admin("set_hold", {"index": 1})
        assert sandbox.notifier.flush(10)
        counters = sandbox.notifier.counters()["salesforce"]
    assert counters["failed"] == 1 and counters["acked"] == 0
    assert 2 <= counters["sent"] <= 4 and counters["retried"] == counters["sent"] - 1
    receiver.clear()
