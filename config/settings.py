"""Typed settings, loaded once at start-up.

Sources, later ones win: the defaults shipped in ``config/defaults.toml``; the user's file
(``--config PATH`` or ``LEDGERBRIDGE_CONFIG``); environment variables for the few things that
differ per machine (``LEDGERBRIDGE_DATABASE_URL``). Secrets never live in these files: a
connection names the environment variables or the secrets file that hold them, and ``repr``
of settings never shows a secret.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from billing_core.domain.credit import CreditPolicy

DEFAULT_DATABASE_URL = "sqlite:///ledgerbridge.db"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the key and the value."""


@dataclass(frozen=True)
class BillingSettings:
    invoice_series: str = "INV"
    default_payment_terms_days: int = 30
    default_bill_cycle_day: int = 1
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
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    billing: BillingSettings = field(default_factory=BillingSettings)
    credit: CreditPolicy = field(default_factory=CreditPolicy)
    provisioner: ProvisionerSettings = field(default_factory=ProvisionerSettings)
    connections: tuple[dict[str, Any], ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _section(cls: type, data: dict[str, Any], name: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"[{name}] has unknown key(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        default = known[key].default
        if isinstance(default, Decimal):
            try:
                number = Decimal(str(value))
            except InvalidOperation:
                raise ConfigError(f"[{name}] {key}={value!r} is not a number") from None
            if not number.is_finite() or number <= 0:
                raise ConfigError(f"[{name}] {key}={value!r} must be a number above 0")
            value = number
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"[{name}] {key}={value!r} must be true or false")
        elif isinstance(default, int) and not isinstance(default, bool) and (
                not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"[{name}] {key}={value!r} must be an integer")
        values[key] = value
    return cls(**values)


def load_defaults() -> dict[str, Any]:
    text = resources.files("config").joinpath("defaults.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def load_settings(path: str | os.PathLike[str] | None = None,
                  env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    data = load_defaults()
    path = path or env.get("LEDGERBRIDGE_CONFIG")
    if path:
        file = Path(path)
        try:
            data = _merge(data, tomllib.loads(file.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(file)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(file)!r} is not valid TOML: {exc}") from None
    database_url = env.get("LEDGERBRIDGE_DATABASE_URL") or data.get("database", {}).get(
        "url", DEFAULT_DATABASE_URL)
    return Settings(
        database_url=database_url,
        billing=_section(BillingSettings, data.get("billing", {}), "billing"),
        credit=_section(CreditPolicy, data.get("credit", {}), "credit"),
        provisioner=_section(ProvisionerSettings, data.get("provisioner", {}), "provisioner"),
        connections=tuple(data.get("connections", [])),
        raw=data,
    )
