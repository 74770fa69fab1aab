"""CRM change events on the wire: what Dataverse webhooks and Salesforce outbound messages or
JSON callouts post, how each is authenticated, and what the listener answers.

Rules kept here:
- Pure functions of the request's bytes, headers and query (no I/O): the HTTP receivers
  (``jobs/api/routes_events.py``) call them and store what they return.
- An event only says "look at this record": what is kept of it is the CRM's event id (for
  de-duplication), the table / sObject name, the record id and the message name. Attributes,
  images and field values in the payload are never read: the record is read back from the CRM
  (``sync.resync``), so forged or stale payload content never reaches billing.
- Who made the change is kept too (``WireEvent.modified_by``), only to recognise the echo of
  the sync's own pushes (``by_user``): Dataverse ``UserId`` (the user the operation ran for)
  and ``InitiatingUserId`` (who called), Salesforce the sObject's ``LastModifiedById`` (when
  the outbound message selects it) and the JSON callout's ``modified_by`` (a user id for every
  id, or ``{record id: user id}``). An event is ours only when every modifier it names is the
  connection's integration user; one naming nobody, or a person too, is not.
- A body that does not parse as JSON, nested deeper than the parser goes included, is a 400
  (never a 500: the CRM would send it again and again).
- Authentication happens before parsing and compares secrets with ``hmac.compare_digest``
  (constant time); a refusal is an ``EventRefused`` with status 401 whose message never holds
  the secret or what was given.
- Dataverse (``RemoteExecutionContext`` JSON): ``MessageName`` (``Create``/``Update``/
  ``Delete``...), ``PrimaryEntityName`` (the table's logical name), ``PrimaryEntityId``; the
  event id is ``OperationId`` (the asynchronous operation, kept by the platform's retries),
  else ``RequestId``, else the ``x-request-id`` header, else none.
- Salesforce outbound message (SOAP ``notifications``, namespace
  ``http://soap.sforce.com/2005/09/outbound``): ``OrganizationId`` must be the connection's; each
  ``Notification`` gives its ``Id`` (the event id, kept across Salesforce's retries) and an
  ``sObject`` whose ``xsi:type`` names the object and whose ``Id`` is the record. The answer is
  :data:`SOAP_ACK` (``notificationsResponse/Ack = true``); without it Salesforce retries.
  Parsed with ``defusedxml`` (no entity expansion, no external entities).
- Salesforce JSON callout (Flow / Apex): ``{"sobject": "Account", "ids": [...], "event":
  "updated", "event_id": "...", "modified_by": "005..."}`` (``event`` informational,
  ``event_id`` and ``modified_by`` optional) with the
  HMAC-SHA256 of the raw body in the configured header (hex or base64,
  optionally ``sha256=``-prefixed). Each id's event id is ``<event_id>:<id>`` when the body (or
  an ``Idempotency-Key`` header) gives one; without one a callout is stored as given (no
  de-duplication, and none is needed: the events of one record coalesce).
- An event id longer than the inbox keeps (``MAX_EVENT_ID``) is shortened by
  :func:`fit_event_id` to its head and the SHA-256 of the whole, never cut: cut, two ids that
  differ only past the width (a long callout ``event_id`` followed by record ids of one org)
  were one id, and every event but the first was taken for a re-send and lost.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import ElementTree as SafeET

OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
SOAP_ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    "<soapenv:Body>"
    f'<notificationsResponse xmlns="{OUTBOUND_NS}"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body></soapenv:Envelope>")
_NIL_GUID = "00000000-0000-0000-0000-000000000000"
# \Z, not $: $ also matches before a final newline, and "<id>\n" is not an id
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}\Z")
_SF_ID = re.compile(r"^[0-9A-Za-z]{15}([0-9A-Za-z]{3})?\Z")
#: Longest event id kept (the inbox column's width).
MAX_EVENT_ID = 160
#: At most this many record ids in one JSON callout (Salesforce sends 100 notifications at most
#: per outbound message; a callout of more is split by its sender).
MAX_IDS = 1000


def fit_event_id(event_id: str) -> str:
    """``event_id`` as the inbox keeps it: as given when it fits ``MAX_EVENT_ID``, else its
    head and the SHA-256 of the whole (the same id always gives the same result, two different
    ids never one)."""
    if len(event_id) <= MAX_EVENT_ID:
        return event_id
    digest = hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{event_id[:MAX_EVENT_ID - len(digest) - 1]}#{digest}"


class EventRefused(Exception):
    """The request is refused: ``status`` 401 (authentication) or 400 (not an event)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class WireEvent:
    """One "look at this record" from the CRM."""

    event_id: str | None        # the CRM's id of the event; None: nothing to de-duplicate on
    crm_object: str             # Dataverse logical name / Salesforce sObject type
    crm_id: str
    action: str                 # Create / Update / Delete / ... ("notify": not said)
    #: The CRM users the event names as having made the change (Dataverse ``UserId`` and
    #: ``InitiatingUserId``; Salesforce the sObject's ``LastModifiedById``, the callout's
    #: ``modified_by``); empty when it names none.
    modified_by: tuple[str, ...] = ()


def by_user(event: WireEvent, user: str | None) -> bool:
    """Whether ``user`` (the connection's own integration user) made the event's change and no
    one else: every modifier the event names is ``user`` (Dataverse GUIDs without case;
    Salesforce ids by their 15 case-sensitive characters). An event naming no modifier, or
    naming another user too (an impersonated or initiating person), is not ours."""
    if not user or not event.modified_by:
        return False
    return all(_same_user(given, user) for given in event.modified_by)


def _same_user(given: str, user: str) -> bool:
    if _GUID.match(given) and _GUID.match(user):
        return given.lower() == user.lower()
    if _SF_ID.match(given) and _SF_ID.match(user):
        return given[:15] == user[:15]
    return False


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the expected one; an empty
    expected secret matches nothing."""
    return bool(expected) and hmac.compare_digest((given or "").encode("utf-8"), expected.encode("utf-8"))


# -- Dataverse --------------------------------------------------------------------------------
def check_dataverse_auth(auth: str, key_name: str, key: str, headers: Mapping[str, str],
                         query: Mapping[str, str]) -> None:
    """The webhook's authentication: ``webhook_key`` (``?code=``), ``header`` (header
    ``key_name``) or ``query_string`` (``?key_name=``), each equal to ``key``."""
    if auth == "webhook_key":
        given = query.get("code")
    elif auth == "header":
        given = headers.get(key_name.lower())
    else:
        given = query.get(key_name)
    if not same_secret(given, key):
        raise EventRefused(401, f"the webhook's {_what(auth, key_name)} is missing or wrong")


def _what(auth: str, key_name: str) -> str:
    return {"webhook_key": "key (code)", "header": f"header {key_name}",
            "query_string": f"query parameter {key_name}"}.get(auth, auth)


def parse_dataverse(body: bytes, headers: Mapping[str, str]) -> WireEvent:
    """The event of one ``RemoteExecutionContext`` JSON body."""
    try:
        ctx = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise EventRefused(400, "the body is not JSON (a RemoteExecutionContext)") from None
    if not isinstance(ctx, dict):
        raise EventRefused(400, "the body is not a RemoteExecutionContext object")
    entity, crm_id = ctx.get("PrimaryEntityName"), ctx.get("PrimaryEntityId")
    message = ctx.get("MessageName")
    if not isinstance(entity, str) or not entity:
        raise EventRefused(400, f"PrimaryEntityName={_short(entity)}: must be a table name")
    if not isinstance(crm_id, str) or not _GUID.match(crm_id):
        raise EventRefused(400, f"PrimaryEntityId={_short(crm_id)}: must be a GUID")
    event_id = None
    for candidate in (ctx.get("OperationId"), ctx.get("RequestId"), headers.get("x-request-id")):
        if isinstance(candidate, str) and candidate and candidate != _NIL_GUID:
            event_id = fit_event_id(candidate)
            break
    users = tuple(dict.fromkeys(
        u.lower() for u in (ctx.get("UserId"), ctx.get("InitiatingUserId"))
        if isinstance(u, str) and _GUID.match(u) and u != _NIL_GUID))
    return WireEvent(event_id, entity.lower(), crm_id.lower(),
                     message if isinstance(message, str) and message else "notify", users)


# -- Salesforce -------------------------------------------------------------------------------
def same_org(given: str | None, expected: str) -> bool:
    """Whether an organization id is the configured one (15 or 18 characters: an 18-character
    id is its 15-character form plus a case-safe suffix, so the first 15 decide)."""
    given = given or ""
    return len(given) in (15, 18) and hmac.compare_digest(given[:15].encode(),
                                                          expected[:15].encode())


def parse_outbound(body: bytes, organization_id: str | None) -> list[WireEvent]:
    """The events of one outbound message; 401 when its ``OrganizationId`` is not the
    connection's (``organization_id`` None: outbound messages are not accepted)."""
    try:
        root: Element = SafeET.fromstring(body)
    except Exception:  # noqa: BLE001 - any parse failure (bad XML, entities refused) is a 400
        raise EventRefused(400, "the body is not an outbound message (SOAP XML)") from None
    notes = root.find(f".//{{{OUTBOUND_NS}}}notifications")
    if notes is None:
        raise EventRefused(400, "no notifications element (an outbound message)")
    org = notes.findtext(f"{{{OUTBOUND_NS}}}OrganizationId")
    if organization_id is None or not same_org(org, organization_id):
        raise EventRefused(401, "OrganizationId is not this connection's organization")
    events = []
    for note in notes.findall(f"{{{OUTBOUND_NS}}}Notification"):
        note_id = (note.findtext(f"{{{OUTBOUND_NS}}}Id") or "").strip()
        sobject = note.find(f"{{{OUTBOUND_NS}}}sObject")
        if sobject is None or not note_id:
            raise EventRefused(400, "a Notification without Id or sObject")
        kind = sobject.get(_XSI_TYPE, "")
        kind = kind.rpartition(":")[2]
        fields = {c.tag.rpartition("}")[2]: (c.text or "").strip() for c in sobject}
        record_id = fields.get("Id", "")
        if not kind or not _SF_ID.match(record_id):
            raise EventRefused(400, f"Notification {_short(note_id)}: sObject type "
                                    f"{_short(kind)} / Id {_short(record_id)} not usable")
        by = fields.get("LastModifiedById", "")
        events.append(WireEvent(fit_event_id(note_id), kind, record_id, "notify",
                                (by,) if _SF_ID.match(by) else ()))
    return events


def check_signature(body: bytes, secret: str, given: str | None) -> None:
    """The JSON callout's HMAC-SHA256 signature of the raw body (hex or base64)."""
    mac = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    sig = (given or "").strip()
    sig = sig[7:] if sig.lower().startswith("sha256=") else sig
    ok = hmac.compare_digest(sig.lower().encode(), mac.hex().encode()) \
        | hmac.compare_digest(sig.encode(), base64.b64encode(mac))
    if not ok:
        raise EventRefused(401, "the signature header is missing or does not match the body")


def parse_callout(body: bytes, headers: Mapping[str, str]) -> list[WireEvent]:
    """The events of one JSON callout ``{"sobject": ..., "ids": [...], "event_id": ...}``."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise EventRefused(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise EventRefused(400, "the body must be an object {\"sobject\", \"ids\"}")
    kind, ids = data.get("sobject"), data.get("ids")
    if not isinstance(kind, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,79}", kind):
        raise EventRefused(400, f"sobject={_short(kind)}: must be an sObject name")
    if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS:
        raise EventRefused(400, f"ids: must be a list of 1 to {MAX_IDS} record ids")
    bad = next((i for i in ids if not isinstance(i, str) or not _SF_ID.match(i)), None)
    if bad is not None:
        raise EventRefused(400, f"ids: {_short(bad)} is not a Salesforce id")
    given = data.get("event_id", headers.get("idempotency-key"))
    if given is not None and (not isinstance(given, str) or not given):
        raise EventRefused(400, f"event_id={_short(given)}: must be a non-empty string")
    given_action = data.get("event", data.get("action"))     # created / updated / deleted
    action = given_action if isinstance(given_action, str) and given_action else "notify"
    by = data.get("modified_by")
    if by is not None and not (isinstance(by, str) and _SF_ID.match(by)) and not (
            isinstance(by, dict) and all(isinstance(v, str) and _SF_ID.match(v)
                                         for v in by.values())):
        raise EventRefused(400, f"modified_by={_short(by)}: must be a user id, or an object "
                                "of record id -> user id")
    return [WireEvent(fit_event_id(f"{given}:{i}") if given else None, kind, i, action,
                      _modifier(by, i)) for i in dict.fromkeys(ids)]


def _modifier(by: Any, record_id: str) -> tuple[str, ...]:
    if isinstance(by, str):
        return (by,)
    if isinstance(by, dict) and isinstance(by.get(record_id), str):
        return (by[record_id],)
    return ()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
