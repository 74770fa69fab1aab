"""Typed settings of one CRM connection, and the one checker every settings table goes through.

Shape of a connection (see config/connections.example.toml):

    [connections.sf_prod]
    crm = "salesforce"                   # "salesforce" | "dynamics"
    url = "https://acme.my.salesforce.com"   # SF: My Domain / login host; Dynamics: org URL
    auth = "client_credentials"          # SF: client_credentials | jwt | password
                                         # Dynamics: client_secret | certificate
    api_version = "59.0"                 # Dynamics default "9.2"
    tenant_id = "..."                    # Dynamics only
    authority_host = "https://login.microsoftonline.com"   # Dynamics only
    validate_authority = true            # false only for the local sandbox
    connect_timeout = 5.0                # seconds
    read_timeout = 60.0
    ca_bundle = "/etc/ssl/corp-ca.pem"   # optional; wins over REQUESTS_CA_BUNDLE
    page_size = 2000                     # SF batchSize (<= 2000); Dynamics maxpagesize (<= 5000)
    overlap_seconds = 300                # re-read window for late commits
    budget_share = 0.8                   # stop at this share of the daily API allowance
    max_attempts = 5                     # retry bound (attempts) ...
    max_retry_seconds = 120              # ... and total time
    fieldmap = "salesforce"              # built-in map name or a path to a TOML map
    fieldmap_overrides = "my_fields.toml"    # optional user map merged over it
    time_zone = "Europe/Berlin"          # IANA; Dataverse "user local" dates read in it (UTC)
    secrets_file = "/etc/ledgerbridge/secrets.toml"   # optional
    [connections.sf_prod.credentials]
    client_id = "env:SF_CLIENT_ID"       # non-secret keys may be literal
    client_secret = "env:SF_CLIENT_SECRET"   # secret keys must be env:/file: references

Rules kept here:
- ``check_table`` is the one way a settings table is checked, here and for every section of
  ``config`` (it lives in ``connectors`` because connectors import nothing of ``config``). A
  value's type is its dataclass annotation, its range a ``Rule``; an unknown key, a wrong type
  (a bool is not a number, a string is not a number) or a value out of range is a
  ``SettingsError`` whose one line names the dotted key and the value:
  ``sync.interval_minutes = '5': must be a number``.
- Secrets are references only (see credentials.py); neither ``repr`` nor an error message ever
  shows a secret.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from connectors.credentials import validate_refs
from connectors.values import time_zone

CRMS = {"salesforce": ("client_credentials", "jwt", "password"),
        "dynamics": ("client_secret", "certificate")}
#: Defaults that differ by CRM; the dataclass holds an empty placeholder for them.
CRM_DEFAULTS: dict[str, dict[str, Any]] = {
    "salesforce": {"api_version": "59.0", "page_size": 2000, "fieldmap": "salesforce"},
    "dynamics": {"api_version": "9.2", "page_size": 5000, "fieldmap": "dynamics"},
}
MAX_PAGE_SIZE = {"salesforce": 2000, "dynamics": 5000}
# Upper bounds of the numeric settings: past them a value is a typo, and some would fail only
# at the first CRM call (a socket timeout or a cursor's re-read window that overflows).
MAX_CONNECT_SECONDS = 600               # opening a connection
MAX_READ_SECONDS = 3600                 # waiting for one answer
MAX_OVERLAP_SECONDS = 30 * 24 * 3600    # the re-read window: Salesforce's getUpdated covers 30 days
MAX_ATTEMPTS = 100                      # retries back off exponentially
MAX_RETRY_SECONDS = 24 * 3600           # waiting between the attempts of one call
_CLOCK = re.compile(r"([01]?\d|2[0-3]):[0-5]\d")
_SECRETISH = ("secret", "password", "token", "private_key")


class SettingsError(ValueError):
    """A settings table is invalid; the one-line message names the dotted key and the value."""


@dataclass(frozen=True)
class Rule:
    """What a setting must be beyond its annotated type (bounds are inclusive unless ``above``)."""

    above: int | None = None
    at_least: int | None = None
    at_most: int | None = None
    one_of: tuple[str, ...] = ()              # a string, or each item of a list of strings
    clock: bool = False                       # "HH:MM", 24-hour
    not_empty: bool = False                   # a string or a list


def shown(key: str, value: Any) -> str:
    """The value as an error message shows it: its repr, cut short, hidden if it may be secret."""
    if any(word in key.lower() for word in _SECRETISH):
        return "'***'"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def refuse_unknown(table: Mapping[str, Any], known: list[str], where: str) -> None:
    """An unknown key is an error (a typo must not silently keep a default)."""
    for key, value in table.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(f"{dotted(where, key)} = {shown(key, value)}: unknown key{hint}")


def dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_table(cls: type, table: Any, where: str, rules: Mapping[str, Rule] | None = None, *,
                not_keys: frozenset[str] = frozenset(),
                optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The values of TOML ``table`` for dataclass ``cls``: every key known, of its annotated type
    and within its ``rules``. A field without a default is required unless it is ``optional``
    (the caller fills it in); ``not_keys`` are fields the table may not set. Text becomes
    ``Decimal`` and lists become tuples where annotated so."""
    if not isinstance(table, Mapping):
        raise SettingsError(f"{where} = {shown(where, table)}: must be a table")
    rules = rules or {}
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.name not in not_keys]
    refuse_unknown(table, names, where)
    for f in fields(cls):
        if (f.name not in not_keys | optional and f.name not in table
                and f.default is MISSING and f.default_factory is MISSING):
            raise SettingsError(f"{dotted(where, f.name)} is missing (it has no default)")
    return {key: _check(dotted(where, key), key, value, hints[key], rules.get(key, Rule()))
            for key, value in table.items()}


def _check(name: str, key: str, value: Any, hint: Any, rule: Rule) -> Any:
    def bad(reason: str, given: Any = value) -> SettingsError:
        return SettingsError(f"{name} = {shown(key, given)}: {reason}")

    kind = _without_none(hint)
    origin = get_origin(kind) or kind
    if kind is bool:
        if not isinstance(value, bool):
            raise bad("must be true or false")
    elif kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("must be an integer")
    elif kind is float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(
                value):
            raise bad("must be a number")
        value = float(value)
    elif kind is Decimal:
        value = _decimal(value)
        if value is None:
            raise bad("must be a number")
    elif kind is str:
        if not isinstance(value, str):
            raise bad("must be a string")
    elif origin is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad("must be a list of strings")
        value = tuple(value)
    elif origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise bad("must be a table")
    else:  # a field type the checker does not know is a programming error, not a user's
        raise TypeError(f"{name}: no check for type {hint!r}")
    problem = _out_of_range(value, rule)
    if problem:
        raise bad(problem)
    return value


def _without_none(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        kinds = [a for a in get_args(hint) if a is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
    return hint


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _out_of_range(value: Any, rule: Rule) -> str | None:
    if rule.above is not None and not value > rule.above:
        return f"must be above {rule.above}"
    if rule.at_least is not None and not value >= rule.at_least:
        return f"must be at least {rule.at_least}"
    if rule.at_most is not None and not value <= rule.at_most:
        return f"must be at most {rule.at_most}"
    if rule.not_empty and not value:
        return "must not be empty"
    items = value if isinstance(value, tuple) else (value,)
    if rule.one_of and any(item not in rule.one_of for item in items):
        return f"{'each ' if isinstance(value, tuple) else ''}must be one of " + ", ".join(
            repr(choice) for choice in rule.one_of)
    if rule.clock and not _CLOCK.fullmatch(value):
        return "must be HH:MM (24-hour)"
    return None


@dataclass(frozen=True)
class ConnectionSettings:
    name: str
    crm: str
    url: str
    auth: str
    credentials: Mapping[str, Any] = field(default_factory=dict, repr=False)
    secrets_file: str | None = None
    api_version: str = ""                         # per CRM: CRM_DEFAULTS
    tenant_id: str | None = None
    authority_host: str = "https://login.microsoftonline.com"
    validate_authority: bool = True
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    ca_bundle: str | None = None
    page_size: int = 0                            # per CRM: CRM_DEFAULTS
    overlap_seconds: int = 300
    budget_share: float = 0.8
    max_attempts: int = 5
    max_retry_seconds: float = 120.0
    fieldmap: str = ""                            # per CRM: CRM_DEFAULTS
    fieldmap_overrides: str | None = None
    time_zone: str = "UTC"                        # IANA name: Dataverse user-local dates
    push_documents: bool = False                  # opt-in: posted invoices/memos + PDFs to the CRM
    #: ``[connections.NAME.events]``: the CRM's change events this connection accepts (None:
    #: its receivers answer 404). Secrets are references (``env:``/``file:``), never values.
    events: EventSettings | None = field(default=None, repr=False)

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


CONNECTION_RULES: dict[str, Rule] = {
    "crm": Rule(one_of=tuple(CRMS)),
    "url": Rule(not_empty=True),
    "secrets_file": Rule(not_empty=True),
    "api_version": Rule(not_empty=True),
    "tenant_id": Rule(not_empty=True),
    "authority_host": Rule(not_empty=True),
    "connect_timeout": Rule(above=0, at_most=MAX_CONNECT_SECONDS),
    "read_timeout": Rule(above=0, at_most=MAX_READ_SECONDS),
    "ca_bundle": Rule(not_empty=True),
    "page_size": Rule(at_least=1),
    "overlap_seconds": Rule(at_least=0, at_most=MAX_OVERLAP_SECONDS),
    "budget_share": Rule(above=0, at_most=1),
    "max_attempts": Rule(at_least=1, at_most=MAX_ATTEMPTS),
    "max_retry_seconds": Rule(above=0, at_most=MAX_RETRY_SECONDS),
    "fieldmap": Rule(not_empty=True),
    "fieldmap_overrides": Rule(not_empty=True),
    "time_zone": Rule(not_empty=True),
}


@dataclass(frozen=True)
class EventSettings:
    """``[connections.NAME.events]``: how the CRM's change events are authenticated.

    Dataverse (``auth``): ``webhook_key`` (the ``code`` query parameter), ``header`` (the
    header ``key_name``) or ``query_string`` (the query parameter ``key_name``), each equal to
    ``key``. Salesforce: outbound messages must name ``organization_id`` (and carry the query
    parameter ``key_name`` equal to ``key`` when ``key`` is set); the JSON callout must carry
    ``signature_header`` = HMAC-SHA256 of the raw body with ``hmac_secret`` (hex or base64)."""

    auth: str = "webhook_key"
    key_name: str = ""
    key: str | None = None                        # "env:VAR" / "file:key"
    organization_id: str | None = None            # Salesforce: 15 or 18 characters
    hmac_secret: str | None = None                # "env:VAR" / "file:key"
    signature_header: str = "X-Signature"


EVENT_RULES: dict[str, Rule] = {
    "auth": Rule(one_of=("webhook_key", "header", "query_string")),
    "key_name": Rule(not_empty=True), "key": Rule(not_empty=True),
    "organization_id": Rule(not_empty=True), "hmac_secret": Rule(not_empty=True),
    "signature_header": Rule(not_empty=True),
}


def parse_events(where: str, crm: str, raw: Any) -> EventSettings:
    """Check ``[connections.NAME.events]``: secrets are references, and each CRM has what it
    needs to authenticate (a Dataverse key; a Salesforce organization id or HMAC secret)."""
    values = check_table(EventSettings, raw, where, EVENT_RULES)
    for key in ("key", "hmac_secret"):
        value = values.get(key)
        if value is not None and not value.startswith(("env:", "file:")):
            raise SettingsError(f"{where}.{key} = '***': must be 'env:VAR' or 'file:key'; "
                                "secrets are never written in the config file")
    events = EventSettings(**values)
    if crm == "dynamics" and events.key is None:
        raise SettingsError(f"{where}.key is missing (Dataverse webhooks are authenticated "
                            "with it)")
    if crm == "dynamics" and events.auth != "webhook_key" and not events.key_name:
        raise SettingsError(f"{where}.key_name is missing (auth = {events.auth!r} names the "
                            "header or query parameter)")
    if crm == "salesforce" and events.organization_id is None and events.hmac_secret is None:
        raise SettingsError(f"{where}: give organization_id (outbound messages) and/or "
                            "hmac_secret (JSON callouts)")
    return events


def parse_connection(name: str, raw: Mapping[str, Any]) -> ConnectionSettings:
    """Validate one `[connections.NAME]` table into settings with per-CRM defaults."""
    where = f"connections.{name}"
    raw = dict(raw) if isinstance(raw, Mapping) else raw
    events_raw = raw.pop("events", None) if isinstance(raw, dict) else None
    values = check_table(ConnectionSettings, raw, where, CONNECTION_RULES,
                         not_keys=frozenset({"name"}), optional=frozenset({"auth"}))
    crm = values["crm"]
    auth = values.setdefault("auth", CRMS[crm][0])
    if not isinstance(auth, str) or auth not in CRMS[crm]:
        raise SettingsError(f"{where}.auth = {shown('auth', auth)}: must be one of "
                            + ", ".join(repr(a) for a in CRMS[crm]) + f" for {crm}")
    values = {**CRM_DEFAULTS[crm], **values}
    values["url"] = values["url"].rstrip("/")
    if crm == "dynamics" and "tenant_id" not in values:
        raise SettingsError(f"{where}.tenant_id is missing (dynamics needs it)")
    if values["page_size"] > MAX_PAGE_SIZE[crm]:
        raise SettingsError(f"{where}.page_size = {values['page_size']}: must be at most "
                            f"{MAX_PAGE_SIZE[crm]} for {crm}")
    if "time_zone" in values and time_zone(values["time_zone"]) is None:
        raise SettingsError(f"{where}.time_zone = {shown('time_zone', values['time_zone'])}: "
                            "must be an IANA time zone name such as 'Europe/Berlin'")
    validate_refs(name, values.get("credentials", {}))
    if events_raw is not None:
        values["events"] = parse_events(f"{where}.events", crm, events_raw)
    return ConnectionSettings(name=name, **values)


def load_connections(path: str | Path) -> dict[str, ConnectionSettings]:
    """All connections of a config file, by name."""
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    tables = data.get("connections", {})
    return {name: parse_connection(name, raw) for name, raw in tables.items()}
