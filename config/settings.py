"""Typed settings, loaded and checked once at start-up.

Rules kept here:
- Each default is written once: in the dataclass of its section (``CreditPolicy`` is billing's,
  ``ConnectionSettings`` the connectors'). ``config/defaults.example.toml`` documents every key
  with its default and is never loaded (a test keeps the two equal).
- Sources, later ones win: those defaults; the user's file (``--config PATH`` or
  ``LEDGERBRIDGE_CONFIG``); ``LEDGERBRIDGE_DATABASE_URL`` for the database.
- Every section, ``[connections.NAME]`` included, goes through ``connectors.settings.check_table``
  against its dataclass and the ``Rule``s in ``SECTIONS``: an unknown key (at the top level too),
  a wrong type or a value out of range is a ``ConfigError`` whose one line names the dotted key
  and the value, e.g. ``sync.interval_minutes = '5': must be a number``.
- Secrets never live in the file: a connection names the environment variables or the secrets
  file that hold them, and ``repr`` of settings never shows a secret.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from billing_core.documents.options import RenderOptions, Seller
from billing_core.domain.credit import CreditPolicy
from billing_core.domain.dunning import CLASS_NAME, Schedules
from billing_core.domain.money import MAX_MINOR
from connectors.base import OBJECTS
from connectors.credentials import CredentialError
from connectors.settings import (
    ConnectionSettings,
    Rule,
    SettingsError,
    check_table,
    parse_connection,
    refuse_unknown,
    shown,
)

DEFAULT_DATABASE_URL = "sqlite:///ledgerbridge.db"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the key and the value."""


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = DEFAULT_DATABASE_URL               # LEDGERBRIDGE_DATABASE_URL wins
    auto_upgrade: bool = True                     # run and sync migrate (and create) it


@dataclass(frozen=True)
class BillingSettings:
    invoice_series: str = "INV"
    bill_run_chunk_size: int = 2000
    tax_inclusive: bool = False                   # prices include tax (default: added on top)


@dataclass(frozen=True)
class ProvisionerSettings:
    kind: str = "log"                             # log | webhook | crm
    url: str | None = None
    secret_env: str | None = None                 # env var holding the HMAC secret
    max_attempts: int = 5
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class SyncSettings:
    interval_minutes: float = 5.0                 # pull + reconcile + push per connection
    push_interval_seconds: float = 60.0           # outbox push
    dispatch_interval_seconds: float = 60.0       # provisioning dispatch
    hold_interval_minutes: float = 60.0           # time-based hold re-evaluation
    bill_run_time: str = "02:00"                  # daily, UTC
    misfire_grace_seconds: int = 300
    shutdown_timeout_seconds: float = 30.0
    push_batch_size: int = 1000                   # records per connector.write call
    push_max_attempts: int = 8                    # then dead-lettered
    objects: tuple[str, ...] = OBJECTS
    write_crm_hold: bool = False                  # opt-in: billing sets the CRM's own hold flag
    events_interval_seconds: float = 5.0          # targeted resync of the CRM's change events
    events_batch_size: int = 1000                 # records (not events) per round and connection
    drift_sweep: bool = True                      # the drift sweep job (sync.drift); false: off
    drift_sweep_time: str = "03:30"               # daily, UTC
    drift_sweep_interval_hours: float | None = None   # instead of the daily time: every N hours


@dataclass(frozen=True)
class DocumentSettings:
    templates_dir: str | None = None              # the company's templates, before built-in
    locale: str = "en"                            # Babel locale, or "country" (the account's)
    page_size: str = "A4"                         # A4 | letter
    font: str = "helvetica"                       # PDF font: helvetica | vera | a .ttf file
    font_bold: str | None = None                  # the .ttf font's bold (default: the same)
    seller_name: str = ""
    seller_address: tuple[str, ...] = ()          # one item per line
    seller_tax_id: str = ""
    seller_email: str = ""

    def render_options(self) -> RenderOptions:
        """What the document renderer (``billing_core.documents``) takes."""
        return RenderOptions(
            seller=Seller(name=self.seller_name, address=self.seller_address,
                          tax_id=self.seller_tax_id, email=self.seller_email),
            locale=self.locale, templates_dir=self.templates_dir, page_size=self.page_size,
            font=self.font, font_bold=self.font_bold)


@dataclass(frozen=True)
class EmailSettings:
    enabled: bool = False                         # nothing is queued nor sent until true
    since: str = ""                               # ISO date: documents issued from it are emailed
    from_address: str = ""                        # the From: (required when enabled)
    host: str = "localhost"
    port: int = 25
    security: str = "none"                        # none | starttls | tls
    ca_bundle: str | None = None                  # PEM of the CAs to trust (default: the system's)
    username: str | None = None
    password: str | None = None                   # "env:VAR" or "file:key", never the secret
    secrets_file: str | None = None               # the TOML file "file:" keys are read from
    timeout_seconds: float = 30.0                 # every SMTP call
    max_attempts: int = 8                         # then dead
    retry_base_seconds: float = 60.0              # doubled per attempt
    retry_max_seconds: float = 3600.0
    batch_size: int = 100                         # messages per SMTP connection
    lease_seconds: float = 600.0                  # a "sending" claim older than this is taken over
    send_interval_seconds: float = 60.0           # the daemon's email-send job


@dataclass(frozen=True)
class DunningClass:
    """``[dunning.classes.NAME]``: the schedule of the accounts of one class."""
    offsets: tuple[int, ...]                      # sorted, distinct; () when not enabled
    enabled: bool = True                          # false: no reminders for this class


@dataclass(frozen=True)
class DunningSettings:
    enabled: bool = False                         # needs [email] enabled too
    offsets: str = "-3, 7, 14"                    # days from the due date, e.g. "-3, 7, 14"
    run_interval_minutes: float = 60.0            # the daemon's dunning job
    classes: Mapping[str, Any] | None = None      # [dunning.classes.NAME] -> DunningClass

    def schedule(self) -> tuple[int, ...]:
        """The offsets as whole days, sorted and distinct (checked at load)."""
        return _offsets(self.offsets)

    def schedules(self) -> Schedules:
        """The default schedule and each class's (billing_core.domain.dunning)."""
        return Schedules(self.schedule(), {
            name: c.offsets if c.enabled else () for name, c in (self.classes or {}).items()})


@dataclass(frozen=True)
class ReconciliationSettings:
    """``[reconciliation]``: vendor reconciliation (docs/RECONCILIATION.md). A difference per
    account and product is listed for finance when it is over the larger of the two."""
    tolerance_minor: int = 0                      # in the account currency's minor units
    tolerance_percent: float = 0.0                # percent of the vendor's cost, 0..100


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    auto_upgrade: bool = True
    billing: BillingSettings = field(default_factory=BillingSettings)
    credit: CreditPolicy = field(default_factory=CreditPolicy)
    provisioner: ProvisionerSettings = field(default_factory=ProvisionerSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    documents: DocumentSettings = field(default_factory=DocumentSettings)
    email: EmailSettings = field(default_factory=EmailSettings)
    dunning: DunningSettings = field(default_factory=DunningSettings)
    reconciliation: ReconciliationSettings = field(default_factory=ReconciliationSettings)
    connections: Mapping[str, ConnectionSettings] = field(default_factory=dict)
    #: ``[metrics.CODE]`` tables (billable metrics), set in the ledger by ``ledgerbridge run``
    #: at start, by each bill run and by ``usage metrics load`` (docs/BILLING.md).
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


#: Upper bounds of the numbers a section holds: each value is used as a ``timedelta``, a date
#: offset, a SQL ``LIMIT`` or an exponent (retries double), where an absurd value is an
#: ``OverflowError`` in the middle of a command (every write, for ``overdue_grace_days``).
#: A bound is checked at start like every other rule: exit 2 naming the key and the value.
MAX_DAYS = 3650                     # ten years: day offsets (as the dunning offsets)
MAX_SECONDS = 366 * 24 * 3600       # a year: intervals, timeouts, leases, back-offs
MAX_MINUTES = MAX_SECONDS // 60
MAX_HOURS = MAX_SECONDS // 3600
MAX_ATTEMPTS = 100                  # retries back off exponentially
MAX_COUNT = 1_000_000               # rows or records per batch

#: Each plain section: its dataclass (types and defaults) and the ranges of its values.
SECTIONS: dict[str, tuple[type, dict[str, Rule]]] = {
    "database": (DatabaseSettings, {"url": Rule(not_empty=True)}),
    "reconciliation": (ReconciliationSettings, {
        "tolerance_minor": Rule(at_least=0, at_most=MAX_MINOR),
        "tolerance_percent": Rule(at_least=0, at_most=100),
    }),
    "billing": (BillingSettings, {
        "invoice_series": Rule(not_empty=True),
        "bill_run_chunk_size": Rule(at_least=1, at_most=MAX_COUNT),
    }),
    "credit": (CreditPolicy, {
        "overdue_grace_days": Rule(at_least=0, at_most=MAX_DAYS),
        "limit_threshold": Rule(above=0),
    }),
    "provisioner": (ProvisionerSettings, {
        "kind": Rule(one_of=("log", "webhook", "crm")),
        "url": Rule(not_empty=True),
        "secret_env": Rule(not_empty=True),
        "max_attempts": Rule(at_least=1, at_most=MAX_ATTEMPTS),
        "timeout_seconds": Rule(above=0, at_most=MAX_SECONDS),
    }),
    "sync": (SyncSettings, {
        "interval_minutes": Rule(above=0, at_most=MAX_MINUTES),
        "push_interval_seconds": Rule(above=0, at_most=MAX_SECONDS),
        "dispatch_interval_seconds": Rule(above=0, at_most=MAX_SECONDS),
        "hold_interval_minutes": Rule(above=0, at_most=MAX_MINUTES),
        "bill_run_time": Rule(clock=True),
        "misfire_grace_seconds": Rule(at_least=1, at_most=MAX_SECONDS),  # APScheduler: not 0
        "shutdown_timeout_seconds": Rule(at_least=0, at_most=MAX_SECONDS),
        "push_batch_size": Rule(at_least=1, at_most=MAX_COUNT),
        "push_max_attempts": Rule(at_least=1, at_most=MAX_ATTEMPTS),
        "objects": Rule(one_of=OBJECTS, not_empty=True),
        "events_interval_seconds": Rule(above=0, at_most=MAX_SECONDS),
        "events_batch_size": Rule(at_least=1, at_most=10000),
        "drift_sweep_time": Rule(clock=True),
        "drift_sweep_interval_hours": Rule(above=0, at_most=MAX_HOURS),
    }),
    "documents": (DocumentSettings, {
        "templates_dir": Rule(not_empty=True),
        "locale": Rule(not_empty=True),
        "page_size": Rule(one_of=("A4", "letter")),
        "font": Rule(not_empty=True),
        "font_bold": Rule(not_empty=True),
    }),
    "email": (EmailSettings, {
        "port": Rule(at_least=1, at_most=65535),
        "security": Rule(one_of=("none", "starttls", "tls")),
        "ca_bundle": Rule(not_empty=True),
        "username": Rule(not_empty=True),
        "password": Rule(not_empty=True),
        "secrets_file": Rule(not_empty=True),
        "timeout_seconds": Rule(above=0, at_most=MAX_SECONDS),
        "max_attempts": Rule(at_least=1, at_most=MAX_ATTEMPTS),
        "retry_base_seconds": Rule(at_least=0, at_most=MAX_SECONDS),
        "retry_max_seconds": Rule(at_least=0, at_most=MAX_SECONDS),
        "batch_size": Rule(at_least=1, at_most=MAX_COUNT),
        "lease_seconds": Rule(above=0, at_most=MAX_SECONDS),
        "send_interval_seconds": Rule(above=0, at_most=MAX_SECONDS),
    }),
    "dunning": (DunningSettings, {
        "offsets": Rule(not_empty=True),
        "run_interval_minutes": Rule(above=0, at_most=MAX_MINUTES),
    }),
}


def _offsets(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))


def _offsets_ok(parts: list[str]) -> bool:
    return all(p.lstrip("+-").isdigit() and abs(int(p)) <= 3650 for p in parts)


_OFFSETS_HINT = "must be whole days from the due date separated by commas, e.g. \"-3, 7, 14\""


def _dunning_class(name: str, table: Any, default: str) -> DunningClass:
    """One ``[dunning.classes.NAME]`` table: ``offsets`` (text as ``[dunning] offsets``, or a
    list of whole days; default: ``[dunning] offsets``) and ``enabled``."""
    where = f"dunning.classes.{name}"
    if not CLASS_NAME.match(name):
        raise SettingsError(f"dunning.classes = {name!r}: a class name is lower-case: a letter "
                            "or digit, then letters, digits, _ or -, at most 64 characters")
    if not isinstance(table, Mapping):
        raise SettingsError(f"{where} = {shown(where, table)}: must be a table with offsets "
                            "(and enabled)")
    refuse_unknown(table, ["offsets", "enabled"], where)
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SettingsError(f"{where}.enabled = {enabled!r}: must be true or false")
    raw = table.get("offsets", default)
    if isinstance(raw, list) and all(type(v) is int for v in raw):
        parts = [str(v) for v in raw]
    elif isinstance(raw, str):
        parts = [p.strip() for p in raw.split(",")]
    else:
        raise SettingsError(f"{where}.offsets = {raw!r}: must be a list of whole days "
                            "([-3, 7, 14]) or text (\"-3, 7, 14\")")
    if not parts or not _offsets_ok(parts):
        raise SettingsError(f"{where}.offsets = {raw!r}: {_OFFSETS_HINT}")
    return DunningClass(_offsets(",".join(parts)) if enabled else (), enabled)


def _check_dunning(dunning: DunningSettings, email: EmailSettings) -> DunningSettings:
    """``dunning`` with its classes parsed (``DunningClass``), or a ``SettingsError``."""
    parts = [p.strip() for p in dunning.offsets.split(",")]
    if not _offsets_ok(parts):
        raise SettingsError(f"dunning.offsets = {dunning.offsets!r}: {_OFFSETS_HINT}")
    if dunning.enabled and not email.enabled:
        raise SettingsError("dunning.enabled = true: needs [email] enabled = true (reminders "
                            "are emails)")
    if dunning.classes is None:
        return dunning
    classes = {name: _dunning_class(name, table, dunning.offsets)
               for name, table in dunning.classes.items()}
    return replace(dunning, classes=classes)


def _check_class_maps(dunning: DunningSettings,
                      connections: Mapping[str, ConnectionSettings]) -> None:
    """A connection whose field map turns CRM values into classes (``account_class`` with
    ``choices``) may name only configured classes: a typo there would give every account of
    that class the default schedule."""
    from connectors import fieldmap

    known = set(dunning.classes or {})
    for name, conn in connections.items():
        try:
            fmap = fieldmap.load(conn.fieldmap, conn.fieldmap_overrides)
            spec = fmap.objects["account"].fields.get("account_class") \
                if "account" in fmap.objects else None
        except (OSError, ValueError, KeyError):
            continue                # an unreadable map is reported where it is loaded
        if spec is None:
            continue
        for crm_value, value in spec.choices.items():
            if not isinstance(value, str) or value.strip().lower() not in known | {""}:
                raise SettingsError(
                    f"connections.{name}: field map account.account_class choice "
                    f"{crm_value!r} = {value!r}: not a class in [dunning.classes] (known: "
                    f"{', '.join(sorted(known)) or 'none configured'})")


def _check_email(email: EmailSettings) -> None:
    """What ``[email]`` needs beyond each key's own rule."""
    from datetime import date

    if email.password is not None and not email.password.startswith(("env:", "file:")):
        raise SettingsError("email.password = '***': must be 'env:VAR' or 'file:key'; "
                            "secrets are never written in the config file")
    if email.since:
        try:
            date.fromisoformat(email.since)
        except ValueError:
            raise SettingsError(f"email.since = {email.since!r}: must be a date "
                                "(YYYY-MM-DD)") from None
    if not email.enabled:
        return
    if not email.since:
        raise SettingsError("email.since = '': required when email.enabled: the first issue "
                            "date to email (so enabling email does not send the history)")
    if "@" not in email.from_address:
        raise SettingsError(f"email.from_address = {email.from_address!r}: required when "
                            "email.enabled: an address such as billing@example.com")


def parse_settings(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the parsed TOML of a config file (``{}``: every default)."""
    env = os.environ if env is None else env
    try:
        refuse_unknown(data, [*SECTIONS, "connections", "metrics"], "")
        built = {name: cls(**check_table(cls, data.get(name, {}), name, rules))
                 for name, (cls, rules) in SECTIONS.items()}
        connections = _connections(data.get("connections", {}))
        _check_email(built["email"])
        built["dunning"] = _check_dunning(built["dunning"], built["email"])
        _check_class_maps(built["dunning"], connections)
        metrics = _metrics(data.get("metrics", {}))
    except (SettingsError, CredentialError) as exc:
        raise ConfigError(str(exc)) from None
    return Settings(database_url=env.get("LEDGERBRIDGE_DATABASE_URL") or built["database"].url,
                    auto_upgrade=built["database"].auto_upgrade,
                    billing=built["billing"], credit=built["credit"],
                    provisioner=built["provisioner"], sync=built["sync"],
                    documents=built["documents"], email=built["email"],
                    dunning=built["dunning"],
                    reconciliation=built["reconciliation"],
                    connections=connections, metrics=metrics)


def _metrics(tables: Any) -> dict[str, Mapping[str, Any]]:
    """``[metrics.CODE]``: each a metric table of the right shape (its values are checked
    against the ledger, e.g. that the product exists, when it is set)."""
    from billing_core.domain.errors import ValidationError
    from billing_core.service.usage_metrics import check_metric_table

    if not isinstance(tables, Mapping):
        raise SettingsError(f"metrics = {shown('metrics', tables)}: must be tables "
                            "([metrics.CODE])")
    for code, spec in tables.items():
        try:
            check_metric_table(code, spec)
        except ValidationError as exc:
            raise SettingsError(str(exc)) from None
    return dict(tables)


def _connections(tables: Any) -> dict[str, ConnectionSettings]:
    if not isinstance(tables, Mapping):
        raise SettingsError(f"connections = {shown('connections', tables)}: must be tables "
                            "([connections.NAME])")
    return {name: parse_connection(name, table) for name, table in tables.items()}


def load_settings(path: str | os.PathLike[str] | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the file at ``path`` (or ``LEDGERBRIDGE_CONFIG``); none: every default."""
    env = os.environ if env is None else env
    path = path or env.get("LEDGERBRIDGE_CONFIG")
    if not path:
        return parse_settings({}, env)
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(file)!r} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(file)!r} cannot be read: {exc}") from None
    return parse_settings(data, env)
