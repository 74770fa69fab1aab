"""Change events the sandbox CRM sends: Dataverse webhooks and Salesforce outbound messages.

With a `NotifyConfig`, every row change made through either side's API or admin actions
(create, update, delete of the objects in `objects`) becomes one `ChangeEvent`, handed to a
`Notifier` that posts the real message shapes from a background thread:

- Dataverse: the service endpoint webhook body, the `RemoteExecutionContext` JSON (MessageName
  Create/Update/Delete, PrimaryEntityName/Id, OrganizationId, CorrelationId, RequestId,
  OperationId, UserId and InitiatingUserId (the user who wrote: the row's
  `_modifiedby_value`, the API client's user or the admin's person), Stage 40, Mode 1
  (asynchronous), Depth 1, InputParameters with the Target `Entity` (its Attributes as
  `KeyValuePairOfstringanyType` pairs, lookups as `EntityReference`, money as `Money`,
  option sets as `OptionSetValue`, times as
  `/Date(ms)/`) or, for Delete, the Target `EntityReference`; PostEntityImages for Create and
  Update), with the `x-ms-dynamics-*` headers, to `<url>/events/dataverse/<connection>`.
  Authentication as registered: `WebhookKey` (`?code=KEY`), `HttpHeader` (headers) or
  `HttpQueryString` (query parameters). Retries as Dataverse documents: one more attempt only
  when the answer is 502, 503 or 504; any other failure (other status, timeout) fails the
  asynchronous system job (counted as `failed`). `dataverse_attempts` changes the count.
- Salesforce outbound messages: a SOAP `notifications` envelope (namespace
  http://soap.sforce.com/2005/09/outbound) with OrganizationId, ActionId, SessionId (nil),
  EnterpriseUrl, PartnerUrl and up to `batch_size` (100) `Notification` elements, each with its
  own unique `Id` and an `sObject xsi:type="sf:<Type>"` holding the record's Id and fields (null
  fields left out), to `<url>/events/salesforce/<connection>`. Delivered only when the answer is
  a 2xx whose body holds `Ack` = true; otherwise retried with exponential backoff (Salesforce:
  up to 2 hours apart for 24 hours, then dropped; here compressed: `retry_base` doubling up to
  `retry_max_interval`, given up after `retry_window`, counted as `failed`). Outbound messages
  fire on create and update only (as from a workflow rule or record-triggered flow); deletes
  reach only the JSON form.
- Salesforce JSON callout (a Flow or Apex HTTP callout): `{"sobject": "Account", "ids":
  [...]}` (plus `"event": "created"|"updated"|"deleted"`, `"event_id"`, a UUID per callout,
  the same when it is retried or duplicated, and `"modified_by"`: the user id who made the
  changes (each record's `LastModifiedById`), or `{record id: user id}` when they differ),
  signed with `X-Signature`: the HMAC-SHA256 hex digest of the raw body under `hmac_secret`, to
  `<url>/events/salesforce/<connection>/json`; delivered on any 2xx, retried as outbound
  messages are.

Fault injection (reproducible under `fault_seed`, default the sandbox seed): each event is
dropped with probability `drop` (never sent); each message is sent twice with probability
`duplicate` (the same body: the same notification ids / OperationId), or held back and sent
after the next message with probability `reorder`; every first delivery waits `delay` seconds.

Rules this module keeps:
- `emit` never blocks and does no I/O: it puts the event on a queue; when `queue_size`
  events and messages are already waiting (not yet sent or being retried), the event is
  refused and counted as `overflow`.
- Every POST has a timeout (`timeout` seconds, connect and read), so a receiver that hangs
  delays only its side's sender thread (each side has its own), never a CRM request. A side
  sends one message at a time, in order of due time (reordering aside).
- Counters per side (events, sent, acked, retried, failed, dropped, duplicated, reordered,
  overflow) are read with `counters()`, and through `GET /__admin__/notify`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit
from xml.sax.saxutils import escape

import requests

log = logging.getLogger(__name__)

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
RETRYABLE_DATAVERSE = frozenset({502, 503, 504})
MAX_WEBHOOK_BYTES = 256 * 1024   # larger webhook bodies are trimmed (x-ms-dynamics-msg-size-exceeded)
COUNTER_NAMES = ("events", "sent", "acked", "retried", "failed", "dropped", "duplicated",
                 "reordered", "overflow")
SALESFORCE_OBJECTS = ("Account", "Product2", "PricebookEntry", "Quote", "QuoteLineItem",
                      "SBQQ__Quote__c", "SBQQ__QuoteLine__c", "Contract", "Opportunity")
DATAVERSE_TABLES = ("accounts", "products", "quotes", "quotedetails")
FORMS = ("soap", "json", "both")
SIDES = ("dataverse", "salesforce")
_EVENT = {"Create": "created", "Update": "updated", "Delete": "deleted"}
#: Money columns (the schema's types do not tell Money from Decimal) and option set columns.
_MONEY = frozenset({"creditlimit", "new_openbalance", "new_availablecredit", "new_creditexposure",
                    "price", "totalamount", "priceperunit", "extendedamount", "new_total",
                    "new_balance"})
_OPTION_SETS = frozenset({"statecode", "statuscode", "new_quotetype", "new_billingtype",
                          "new_billingfrequency"})


@dataclass
class NotifyConfig:
    """Where change events go and how they are delivered (see the module docstring).

    `url` is a base: targets default to `<url>/events/dataverse/<dataverse_connection>`,
    `<url>/events/salesforce/<salesforce_connection>` (SOAP) and `.../json` (the callout form;
    which of the two Salesforce forms `url` feeds is `salesforce_form`). The per-side URLs are
    full targets and win over `url`; a side with no target sends nothing.
    """

    url: str | None = None
    dataverse_url: str | None = None
    salesforce_url: str | None = None
    salesforce_json_url: str | None = None
    salesforce_form: str = "soap"
    dataverse_connection: str = "d365"
    salesforce_connection: str = "sf"
    dataverse_key: str | None = None                    # WebhookKey: ?code=KEY
    dataverse_headers: dict[str, str] = field(default_factory=dict)   # HttpHeader
    dataverse_query: dict[str, str] = field(default_factory=dict)     # HttpQueryString
    salesforce_org_id: str | None = None                # default: the sandbox org's id
    salesforce_query: dict[str, str] = field(default_factory=dict)    # ?k=v on both forms
    hmac_secret: str | None = None
    signature_header: str = "X-Signature"
    objects: tuple[str, ...] = SALESFORCE_OBJECTS + DATAVERSE_TABLES
    salesforce_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    fault_seed: int | None = None
    queue_size: int = 10_000
    batch_size: int = 100
    timeout: float = 5.0
    retry_base: float = 0.5
    retry_max_interval: float = 30.0
    retry_window: float = 300.0
    dataverse_attempts: int = 2
    verify: str | bool = True

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"notify {name} probability {value!r} is not within [0, 1]")
        if self.salesforce_form not in FORMS:
            raise ValueError(f"notify salesforce_form {self.salesforce_form!r} is not one of "
                             f"{FORMS}")
        for name in ("delay", "timeout", "retry_base", "retry_max_interval", "retry_window"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"notify {name} {getattr(self, name)!r} must not be negative")
        if self.timeout <= 0:
            raise ValueError(f"notify timeout {self.timeout!r} must be positive")
        if not 1 <= int(self.batch_size) <= 100:
            raise ValueError(f"notify batch_size {self.batch_size!r} is not within 1..100 "
                             "(Salesforce sends at most 100 notifications per message)")
        if int(self.queue_size) < 1 or int(self.dataverse_attempts) < 1:
            raise ValueError("notify queue_size and dataverse_attempts must be at least 1")

    def target(self, kind: str) -> str | None:
        """The URL for "dataverse", "soap" or "json", or None when that form is not sent."""
        base = self.url.rstrip("/") if self.url else None
        if kind == "dataverse":
            return self.dataverse_url or (
                f"{base}/events/dataverse/{self.dataverse_connection}" if base else None)
        soap_default = base and self.salesforce_form in ("soap", "both")
        json_default = base and self.salesforce_form in ("json", "both")
        if kind == "soap":
            return self.salesforce_url or (
                f"{base}/events/salesforce/{self.salesforce_connection}" if soap_default
                else None)
        return self.salesforce_json_url or (
            f"{base}/events/salesforce/{self.salesforce_connection}/json" if json_default
            else None)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["objects"] = list(self.objects)
        out["salesforce_fields"] = {k: list(v) for k, v in self.salesforce_fields.items()}
        out["targets"] = {k: self.target(k) for k in ("dataverse", "soap", "json")}
        for secret in ("dataverse_key", "hmac_secret"):
            out[secret] = "***" if out[secret] else None
        out["dataverse_headers"] = dict.fromkeys(self.dataverse_headers, "***")
        out["dataverse_query"] = dict.fromkeys(self.dataverse_query, "***")
        out["salesforce_query"] = dict.fromkeys(self.salesforce_query, "***")
        return out


@dataclass(frozen=True)
class ChangeEvent:
    """One committed change: `crm` "salesforce" or "dataverse", `op` Create/Update/Delete,
    `entity` the sObject type or the Dataverse entity set, `record_id`, `attributes` (Dataverse:
    the columns the write set, wire values; Salesforce: the whole row after the write), `row`
    (Dataverse: the row after the write, for the post image), `user` (who wrote), `at`."""

    crm: str
    op: str
    entity: str
    record_id: str
    attributes: dict[str, Any]
    user: str
    at: dt.datetime
    row: dict[str, Any] | None = None


_Draws = tuple[float, float, float]


@dataclass
class _Message:
    side: str            # "dataverse" | "salesforce"
    kind: str            # "dataverse" | "soap" | "json"
    url: str
    body: bytes
    headers: dict[str, str]
    first_at: float = 0.0
    attempts: int = 0
    notifications: int = 1
    draws: _Draws = (1.0, 1.0, 1.0)


class Notifier:
    """The sender: a bounded queue, a thread turning events into messages, and per side a
    heap of messages due and a thread sending them."""

    def __init__(self, config: NotifyConfig, *, seed: int = 0, base_url: str = "",
                 dataverse_org: dict[str, str] | None = None,
                 salesforce_org_id: str | None = None) -> None:
        self.config = replace(config)   # its own copy: faults changed at run time stay here
        self.base_url = base_url.rstrip("/")
        self.dataverse_org = dict(dataverse_org or {})
        self.salesforce_org_id = config.salesforce_org_id or salesforce_org_id or ""
        self._seed = seed if config.fault_seed is None else config.fault_seed
        self._rng = random.Random(self._seed)
        self._queue: queue.Queue[tuple[ChangeEvent, _Draws, int]] = queue.Queue(
            maxsize=config.queue_size)
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {"dataverse": Counter(), "salesforce": Counter()}
        self._due: dict[str, list[tuple[float, int, _Message]]] = {s: [] for s in SIDES}
        self._seq = itertools.count()
        self._held: _Message | None = None
        self._held_since = 0.0
        self._busy = 0
        self._unscheduled = 0   # events emitted and not yet turned into scheduled messages
        self._generation = 0    # bumped by reset(): events drained before it are not sent
        self._idle = threading.Condition(self._lock)
        self._notification = itertools.count(1)
        self._sessions = {side: requests.Session() for side in SIDES}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life -----------------------------------------------------------------------------------
    def start(self) -> Notifier:
        """One thread turns events into messages; one per side sends them, so a receiver that
        hangs on one side never holds up the other's events."""
        if not self._threads:
            steps = [("sandbox-notify", self._ingest)] + [
                (f"sandbox-notify-{side}", functools.partial(self._send_due, side))
                for side in SIDES]
            self._threads = [threading.Thread(target=self._run, args=(step,), name=name,
                                              daemon=True) for name, step in steps]
            for thread in self._threads:
                thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=self.config.timeout + 2)
        for session in self._sessions.values():
            session.close()

    def reset(self) -> None:
        """Pending events and messages forgotten, counters cleared, fault draws restarted."""
        with self._lock:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            for heap in self._due.values():
                heap.clear()
            self._held = None
            self._unscheduled = 0
            self._generation += 1
            for counts in self._counts.values():
                counts.clear()
            self._rng = random.Random(self._seed)

    def configure_faults(self, *, drop: float | None = None, duplicate: float | None = None,
                         reorder: float | None = None, delay: float | None = None,
                         seed: int | None = None) -> None:
        """Change the fault injection while running (the admin API's POST /notify/faults)."""
        with self._lock:
            cfg = self.config
            values = {"drop": cfg.drop if drop is None else float(drop),
                      "duplicate": cfg.duplicate if duplicate is None else float(duplicate),
                      "reorder": cfg.reorder if reorder is None else float(reorder)}
            for name, value in values.items():
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"notify {name} probability {value!r} is not within [0, 1]")
            if delay is not None and float(delay) < 0:
                raise ValueError(f"notify delay {delay!r} must not be negative")
            cfg.drop, cfg.duplicate, cfg.reorder = (values["drop"], values["duplicate"],
                                                    values["reorder"])
            if delay is not None:
                cfg.delay = float(delay)
            if seed is not None:
                self._seed = int(seed)
            self._rng = random.Random(self._seed)

    # -- the CRM side's entry point ------------------------------------------------------------
    def wants(self, entity: str) -> bool:
        return entity in self.config.objects

    def emit(self, event: ChangeEvent) -> None:
        """Queue one change; never blocks (a full queue refuses it: `overflow`)."""
        if not self.wants(event.entity):
            return
        with self._lock:   # counted first: flush() waits for events drained, not scheduled
            # The fault draws are taken here, in the order of the writes, so a seed replays the
            # same faults whatever the sender's timing (drop, duplicate, reorder).
            draws = (self._rng.random(), self._rng.random(), self._rng.random())
            waiting = self._unscheduled + sum(map(len, self._due.values()))
            try:
                if waiting >= self.config.queue_size:   # bounded: events and messages waiting
                    raise queue.Full
                self._queue.put_nowait((event, draws, self._generation))
            except queue.Full:
                self._counts[event.crm]["overflow"] += 1
                return
            self._counts[event.crm]["events"] += 1
            self._unscheduled += 1

    # -- reading ------------------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        with self._lock:
            sides = {side: {name: counts[name] for name in COUNTER_NAMES}
                     for side, counts in self._counts.items()}
            pending = (self._unscheduled + sum(map(len, self._due.values()))
                       + (self._held is not None) + self._busy)
        total = {name: sum(s[name] for s in sides.values()) for name in COUNTER_NAMES}
        return {**sides, "total": total, "pending": pending}

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was delivered or given up; False on timeout. Held
        (reordered) messages and delays are let go at once."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if self._held is not None:
                    self._release_held()
                if (not self._unscheduled and not any(self._due.values())
                        and self._held is None and not self._busy):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))

    # -- the sender thread ---------------------------------------------------------------------
    def _count(self, side: str, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[side][name] += n

    def _run(self, step: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                step()
            except Exception:  # the sender must survive a bug in one message
                log.exception("sandbox notify: sender step failed")
                time.sleep(0.1)

    def _ingest(self) -> None:
        """Events → messages on the sides' heaps; a held (reordered) message is let go after
        1 s when no later message came to overtake it."""
        drained = self._drain(0.05)
        with self._lock:   # events emitted before a reset() are not sent
            events = [(e, d) for e, d, gen in drained if gen == self._generation]
        if drained:
            try:
                self._schedule(self._messages(events))
            finally:
                with self._lock:
                    # reset() already forgot the stale ones: only the current ones count
                    self._unscheduled = max(0, self._unscheduled - len(events))
        with self._lock:
            if self._held is not None and time.monotonic() - self._held_since > 1.0:
                self._release_held()
            self._idle.notify_all()

    def _send_due(self, side: str) -> None:
        """Send this side's next due message (or wait a little for one)."""
        with self._lock:
            heap = self._due[side]
            now = time.monotonic()
            if not heap or heap[0][0] > now:
                self._idle.wait(0.05 if not heap else min(0.05, heap[0][0] - now))
                return
            _due, _seq, message = heapq.heappop(heap)
            self._busy += 1
        try:
            self._deliver(message)
        finally:
            with self._lock:
                self._busy -= 1
                self._idle.notify_all()

    def _drain(self, wait: float) -> list[tuple[ChangeEvent, _Draws, int]]:
        events: list[tuple[ChangeEvent, _Draws, int]] = []
        try:
            events.append(self._queue.get(timeout=wait) if wait > 0
                          else self._queue.get_nowait())
        except queue.Empty:
            return events
        while len(events) < 10 * self.config.batch_size:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return events

    def _messages(self, events: list[tuple[ChangeEvent, _Draws]]) -> list[_Message]:
        """Dropped events left out; Salesforce events batched per sObject type and form (a
        message takes its duplicate / reorder draws from its first event)."""
        cfg = self.config
        kept = []
        for event, draws in events:
            if draws[0] < cfg.drop:
                self._count(event.crm, "dropped")
            else:
                kept.append((event, draws))
        out: list[_Message] = []
        groups: dict[tuple[str, str, str], list[tuple[ChangeEvent, _Draws]]] = {}
        for event, draws in kept:
            if event.crm == "dataverse":
                url = cfg.target("dataverse")
                if url:
                    out.append(self._dataverse_message(url, event))
                    out[-1].draws = draws
                continue
            if cfg.target("soap") and event.op != "Delete":
                groups.setdefault(("soap", event.entity, ""), []).append((event, draws))
            if cfg.target("json"):   # one callout per object and kind of change
                groups.setdefault(("json", event.entity, event.op), []).append((event, draws))
        for (kind, entity, _op), group in groups.items():
            url = cfg.target(kind) or ""
            for lo in range(0, len(group), cfg.batch_size):
                chunk = [e for e, _d in group[lo:lo + cfg.batch_size]]
                message = (self._soap_message(url, entity, chunk) if kind == "soap"
                           else self._json_message(url, entity, chunk))
                message.draws = group[lo][1]
                out.append(message)
        return out

    def _schedule(self, messages: list[_Message]) -> None:
        cfg = self.config
        with self._lock:
            now = time.monotonic()
            for message in messages:
                message.first_at = now
                due = now + cfg.delay
                if message.draws[1] < cfg.duplicate:
                    self._counts[message.side]["duplicated"] += 1
                    copy = _Message(message.side, message.kind, message.url, message.body,
                                    dict(message.headers), now, 0, message.notifications)
                    heapq.heappush(self._due[copy.side], (due, next(self._seq), copy))
                if message.draws[2] < cfg.reorder:
                    # Every message that draws a reorder is held, whatever the sender's timing
                    # (a seed gives the same count): one held before it goes now, behind it.
                    if self._held is not None:
                        self._release_held(due)
                    self._counts[message.side]["reordered"] += 1
                    self._held, self._held_since = message, now
                    continue
                heapq.heappush(self._due[message.side], (due, next(self._seq), message))
                if (self._held is not None and self._held is not message
                        and self._held.side == message.side):
                    self._release_held(due)

    def _release_held(self, after: float | None = None) -> None:
        """Put the held message behind what was scheduled after it (hold the lock)."""
        held, self._held = self._held, None
        if held is not None:
            heapq.heappush(self._due[held.side], (
                after if after is not None else time.monotonic(), next(self._seq), held))

    def _deliver(self, message: _Message) -> None:
        cfg = self.config
        message.attempts += 1
        if message.attempts > 1:
            self._count(message.side, "retried")
        self._count(message.side, "sent")
        status: int | None = None
        acked = False
        try:
            resp = self._sessions[message.side].post(message.url, data=message.body, headers=message.headers,
                                      timeout=(cfg.timeout, cfg.timeout), verify=cfg.verify,
                                      allow_redirects=False)
            status = resp.status_code
            acked = 200 <= status < 300 and (message.kind != "soap" or _acked(resp.content))
        except requests.RequestException as exc:
            log.debug("sandbox notify: POST %s failed: %s", message.url, exc)
        if acked:
            self._count(message.side, "acked")
            return
        retry_at = self._retry_at(message, status)
        if retry_at is None:
            self._count(message.side, "failed")
            log.info("sandbox notify: gave up on a %s message to %s after %d attempt(s)",
                     message.kind, message.url, message.attempts)
            return
        with self._lock:
            heapq.heappush(self._due[message.side], (retry_at, next(self._seq), message))
            self._idle.notify_all()

    def _retry_at(self, message: _Message, status: int | None) -> float | None:
        cfg = self.config
        now = time.monotonic()
        if message.side == "dataverse":
            if status in RETRYABLE_DATAVERSE and message.attempts < cfg.dataverse_attempts:
                return now
            return None
        backoff = min(cfg.retry_base * 2.0 ** (message.attempts - 1), cfg.retry_max_interval)
        if now + backoff - message.first_at > cfg.retry_window:
            return None
        return now + backoff

    # -- message shapes ------------------------------------------------------------------------
    def _dataverse_message(self, url: str, event: ChangeEvent) -> _Message:
        cfg = self.config
        body = dataverse_context(event, self.dataverse_org).encode()
        trimmed = len(body) > MAX_WEBHOOK_BYTES
        if trimmed:   # as Dataverse does: drop the parameters and images, say so in a header
            body = dataverse_context(event, self.dataverse_org, trimmed=True).encode()
        headers = {"Content-Type": "application/json",
                   "x-request-id": str(uuid.uuid4()),
                   "x-ms-dynamics-organization": urlsplit(self.base_url).netloc or "sandbox",
                   "x-ms-dynamics-entity-name": _entity_name(event.entity),
                   "x-ms-dynamics-request-name": event.op,
                   "x-ms-correlation-request-id": str(uuid.uuid4())}
        if trimmed:
            headers["x-ms-dynamics-msg-size-exceeded"] = "true"
        headers.update(cfg.dataverse_headers)
        query = dict(cfg.dataverse_query)
        if cfg.dataverse_key:
            query["code"] = cfg.dataverse_key
        return _Message("dataverse", "dataverse", _with_query(url, query), body, headers)

    def _soap_message(self, url: str, entity: str, events: list[ChangeEvent]) -> _Message:
        ids = [_notification_id(next(self._notification)) for _ in events]
        body = outbound_message(self.salesforce_org_id, _action_id(entity), self.base_url,
                                entity, list(zip(ids, events, strict=True)),
                                self.config.salesforce_fields.get(entity))
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
        url = _with_query(url, self.config.salesforce_query)
        return _Message("salesforce", "soap", url, body.encode(), headers,
                        notifications=len(events))

    def _json_message(self, url: str, entity: str, events: list[ChangeEvent]) -> _Message:
        body: dict[str, Any] = {"sobject": entity, "ids": list(dict.fromkeys(
            e.record_id for e in events)), "event": _EVENT[events[0].op],
            "event_id": str(uuid.uuid4())}   # the same on retries and duplicates
        by = _modifiers(events)
        if by:
            users = set(by.values())
            one = len(users) == 1 and len(by) == len(body["ids"])
            body["modified_by"] = next(iter(users)) if one else by
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self.config.hmac_secret:
            headers[self.config.signature_header] = sign(self.config.hmac_secret, raw)
        url = _with_query(url, self.config.salesforce_query)
        return _Message("salesforce", "json", url, raw, headers, notifications=len(events))


def _modifiers(events: list[ChangeEvent]) -> dict[str, str]:
    """Per record id, the user who made its changes in this callout (`$Record.LastModifiedById`
    in a record-triggered flow); a record changed by two users in one callout is left out (its
    modifier is not one user)."""
    users: dict[str, set[str]] = {}
    for event in events:
        users.setdefault(event.record_id, set()).add(event.user)
    return {rid: next(iter(u)) for rid, u in users.items() if len(u) == 1 and all(u)}


def _with_query(url: str, query: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(query) if query else url


def sign(secret: str, raw: bytes) -> str:
    """The JSON callout's signature: HMAC-SHA256 of the raw body, lowercase hex."""
    return hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def _acked(content: bytes) -> bool:
    """True when a listener's answer holds `<Ack>true</Ack>` (any prefix, any namespace)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(content)
    except ET.ParseError:
        return False
    return any(el.tag.rsplit("}", 1)[-1] == "Ack" and (el.text or "").strip().lower() == "true"
               for el in root.iter())


def _action_id(entity: str) -> str:
    from .salesforce.ids import make_id

    return make_id("04k", 1 + sum(map(ord, entity)))


def _notification_id(n: int) -> str:
    from .salesforce.ids import make_id

    return make_id("04l", n)


def _entity_name(entity_set: str) -> str:
    from .dataverse.schema import TABLES

    table = TABLES.get(entity_set)
    return table.entity if table is not None else entity_set


# -- Salesforce outbound message --------------------------------------------------------------
def _soap_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        v = value.astimezone(dt.UTC)
        return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def outbound_message(org_id: str, action_id: str, base_url: str, entity: str,
                     notifications: list[tuple[str, ChangeEvent]],
                     fields: tuple[str, ...] | None = None) -> str:
    """The SOAP envelope of one outbound message (one sObject type, 1..100 notifications);
    `fields` are the message's selected fields (default: every non-null field)."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" '
             'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
             f'xmlns:xsi="{XSI}">', "<soapenv:Body>",
             f'<notifications xmlns="{OUTBOUND_NS}">',
             f"<OrganizationId>{escape(org_id)}</OrganizationId>",
             f"<ActionId>{escape(action_id)}</ActionId>",
             '<SessionId xsi:nil="true"/>',
             f"<EnterpriseUrl>{escape(base_url)}/services/Soap/c/59.0/{escape(org_id[:15])}"
             "</EnterpriseUrl>",
             f"<PartnerUrl>{escape(base_url)}/services/Soap/u/59.0/{escape(org_id[:15])}"
             "</PartnerUrl>"]
    for note_id, event in notifications:
        parts.append(f"<Notification><Id>{escape(note_id)}</Id>")
        parts.append(f'<sObject xsi:type="sf:{escape(entity)}" xmlns:sf="{SOBJECT_NS}">')
        parts.append(f"<sf:Id>{escape(event.record_id)}</sf:Id>")
        for name, value in event.attributes.items():
            if name == "Id" or value is None or (fields is not None and name not in fields):
                continue
            parts.append(f"<sf:{name}>{escape(_soap_value(value))}</sf:{name}>")
        parts.append("</sObject></Notification>")
    parts += ["</notifications>", "</soapenv:Body>", "</soapenv:Envelope>"]
    return "".join(parts)


# -- Dataverse RemoteExecutionContext ---------------------------------------------------------
def _date_ms(text: str) -> str:
    """`/Date(ms)/` for a wire time ("...Z") or a date-only value (its UTC midnight)."""
    moment = (dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if "T" in text
              else dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return f"/Date({int(moment.timestamp() * 1000)})/"


def _reference(entity: str, guid: str) -> dict[str, Any]:
    return {"__type": f"EntityReference:{CONTRACTS}", "Id": guid, "KeyAttributes": [],
            "LogicalName": entity, "Name": None, "RowVersion": None}


def _attributes(entity_set: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Web API column values as the `Attributes` pairs of an `Entity` in the execution context."""
    from .dataverse.schema import DATE, DATETIME, TABLES

    table = TABLES[entity_set]
    targets = {column: TABLES[target].entity if target in TABLES else target
               for column, target in table.binds.values()}
    out: list[dict[str, Any]] = []
    for column, value in values.items():
        if column == "versionnumber":
            continue
        if column.startswith("_") and column.endswith("_value"):
            name = column[1:-len("_value")]
            target = "systemuser" if name == "modifiedby" else targets.get(column, name)
            out.append({"key": name, "value": None if value is None
                        else _reference(target, str(value))})
            continue
        ctype = table.columns.get(column)
        if value is None:
            wire: Any = None
        elif column in _MONEY:
            wire = {"__type": f"Money:{CONTRACTS}", "Value": value}
        elif column in _OPTION_SETS:
            wire = {"__type": f"OptionSetValue:{CONTRACTS}", "Value": value}
        elif ctype in (DATE, DATETIME) and isinstance(value, str):
            wire = _date_ms(value)
        else:
            wire = value
        out.append({"key": column, "value": wire})
    return out


def _entity(entity_set: str, guid: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"__type": f"Entity:{CONTRACTS}", "Attributes": _attributes(entity_set, values),
            "EntityState": None, "FormattedValues": [], "Id": guid, "KeyAttributes": [],
            "LogicalName": _entity_name(entity_set), "RelatedEntities": [], "RowVersion": None}


def dataverse_context(event: ChangeEvent, org: dict[str, str], trimmed: bool = False) -> str:
    """The `RemoteExecutionContext` JSON of one Create/Update/Delete (asynchronous
    post-operation step, Stage 40, Mode 1). `trimmed`: without InputParameters, images and
    ParentContext, as Dataverse sends a context over 256 KB."""
    from .dataverse.wire import dumps

    entity = _entity_name(event.entity)
    if event.op == "Delete":
        target: dict[str, Any] = _reference(entity, event.record_id)
    else:
        target = _entity(event.entity, event.record_id, event.attributes)
    post = ([{"key": "PostImage", "value": _entity(event.entity, event.record_id, event.row)}]
            if event.row is not None and event.op != "Delete" else [])
    stamp = f"/Date({int(event.at.timestamp() * 1000)})/"
    context = {
        "BusinessUnitId": org.get("business_unit_id", ""),
        "CorrelationId": str(uuid.uuid4()),
        "Depth": 1,
        "InitiatingUserId": event.user,
        "InputParameters": [{"key": "Target", "value": target}],
        "IsExecutingOffline": False,
        "IsInTransaction": False,
        "IsOfflinePlayback": False,
        "IsolationMode": 1,
        "MessageName": event.op,
        "Mode": 1,
        "OperationCreatedOn": stamp,
        "OperationId": str(uuid.uuid4()),
        "OrganizationId": org.get("organization_id", ""),
        "OrganizationName": org.get("organization_name", "sandbox"),
        "OutputParameters": ([{"key": "id", "value": event.record_id}]
                             if event.op == "Create" else []),
        "OwningExtension": {"Id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"step:{entity}:{event.op}")),
                            "KeyAttributes": [], "LogicalName": "sdkmessageprocessingstep",
                            "Name": f"ledgerbridge: {event.op} of {entity}", "RowVersion": None},
        "ParentContext": None,
        "PostEntityImages": post,
        "PreEntityImages": [],
        "PrimaryEntityId": event.record_id,
        "PrimaryEntityName": entity,
        "RequestId": str(uuid.uuid4()),
        "SecondaryEntityName": "none",
        "SharedVariables": [],
        "Stage": 40,
        "UserId": event.user,
    }
    if trimmed:
        for key in ("InputParameters", "PostEntityImages", "PreEntityImages"):
            context[key] = []
    return dumps(context)


# -- wiring the sides' stores -----------------------------------------------------------------
def salesforce_listener(notifier: Notifier) -> Any:
    """The Salesforce store's listener: (op, sObject, row after the write) → one event."""

    def tell(op: str, obj: Any, row: dict[str, Any]) -> None:
        if notifier.wants(obj.name):
            at = row.get("SystemModstamp")
            notifier.emit(ChangeEvent("salesforce", op, obj.name, str(row["Id"]), row,
                                      str(row.get("LastModifiedById") or ""),
                                      at if isinstance(at, dt.datetime) else dt.datetime.now(dt.UTC)))
    return tell


def dataverse_listener(notifier: Notifier, store: Any, now: Any) -> Any:
    """The Dataverse store's listener: (op, entity set, GUID, columns written, row) → one event."""

    def tell(op: str, table: str, guid: str, values: dict[str, Any],
             row: dict[str, Any] | None) -> None:
        if notifier.wants(table):
            # who wrote: the row's stamp (the writing request's user), the actor for a delete
            user = (row or {}).get("_modifiedby_value") if op != "Delete" else None
            notifier.emit(ChangeEvent("dataverse", op, table, guid, values,
                                      str(user or store.actor), now(), row))
    return tell
