"""Sync settings: the ``[sync]`` table and the ``[connections.NAME]`` tables of the config.

Rules: parsed once at start-up; unknown ``[sync]`` keys are refused with the key named; the
connections are parsed by ``connectors.settings.parse_connection`` (secrets stay references).

    [sync]
    interval_minutes = 5            # pull + reconcile + push per connection
    push_interval_seconds = 60      # outbox push
    dispatch_interval_seconds = 60  # provisioning dispatch
    hold_interval_minutes = 60      # time-based hold re-evaluation
    bill_run_time = "02:00"         # daily, UTC
    misfire_grace_seconds = 300
    shutdown_timeout_seconds = 30
    push_batch_size = 1000          # records per connector.write call
    push_max_attempts = 8           # then dead-lettered
    objects = ["account", "product", "price", "quote", "quote_line"]
    write_crm_hold = false          # opt-in: billing sets the CRM's own hold flag for its reasons
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from config.settings import ConfigError, Settings
from connectors.settings import ConnectionSettings, SettingsError, parse_connection
from sync.mapping import OBJECTS


@dataclass(frozen=True)
class SyncSettings:
    interval_minutes: float = 5
    push_interval_seconds: float = 60
    dispatch_interval_seconds: float = 60
    hold_interval_minutes: float = 60
    bill_run_time: str = "02:00"
    misfire_grace_seconds: int = 300
    shutdown_timeout_seconds: float = 30
    push_batch_size: int = 1000
    push_max_attempts: int = 8
    objects: tuple[str, ...] = OBJECTS
    write_crm_hold: bool = False


def sync_settings(settings: Settings) -> SyncSettings:
    raw = dict(settings.raw.get("sync", {}))
    known = {f.name for f in fields(SyncSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"[sync] has unknown key(s): {', '.join(unknown)}")
    if "objects" in raw:
        bad = [o for o in raw["objects"] if o not in OBJECTS]
        if bad:
            raise ConfigError(f"[sync] objects: {bad} not among {list(OBJECTS)}")
        raw["objects"] = tuple(raw["objects"])
    hh, _, mm = str(raw.get("bill_run_time", "02:00")).partition(":")
    if not (hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60):
        raise ConfigError(f"[sync] bill_run_time={raw.get('bill_run_time')!r} must be HH:MM")
    return SyncSettings(**raw)


def connections(settings: Settings) -> dict[str, ConnectionSettings]:
    raw: Any = settings.raw.get("connections", {})
    if not isinstance(raw, dict):
        raise ConfigError("[connections] must be tables: [connections.NAME]")
    try:
        return {name: parse_connection(name, table) for name, table in raw.items()}
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
