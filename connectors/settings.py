"""Typed settings of one CRM connection, loaded from the `[connections.NAME]` tables of TOML.

Shape (see config/connections.example.toml):

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
    page_size = 2000                     # SF batchSize (200..2000); Dynamics maxpagesize (<= 5000)
    overlap_seconds = 300                # re-read window for late commits
    budget_share = 0.8                   # stop at this share of the daily API allowance
    max_attempts = 5                     # retry bound (attempts) ...
    max_retry_seconds = 120              # ... and total time
    fieldmap = "salesforce"              # built-in map name or a path to a TOML map
    fieldmap_overrides = "my_fields.toml"    # optional user map merged over it
    secrets_file = "/etc/ledgerbridge/secrets.toml"   # optional
    [connections.sf_prod.credentials]
    client_id = "env:SF_CLIENT_ID"       # non-secret keys may be literal
    client_secret = "env:SF_CLIENT_SECRET"   # secret keys must be env:/file: references

Rules: secrets are references only (see credentials.py); `repr` never shows a secret; unknown
keys are refused with the key named, so a typo does not silently fall back to a default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from connectors.credentials import validate_refs

CRMS = {"salesforce": ("client_credentials", "jwt", "password"),
        "dynamics": ("client_secret", "certificate")}


class SettingsError(ValueError):
    """The connection config is invalid; the message names connection and key."""


@dataclass(frozen=True)
class ConnectionSettings:
    name: str
    crm: str
    url: str
    auth: str
    credentials: Mapping[str, Any] = field(default_factory=dict, repr=False)
    secrets_file: str | None = None
    api_version: str = ""
    tenant_id: str | None = None
    authority_host: str = "https://login.microsoftonline.com"
    validate_authority: bool = True
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    ca_bundle: str | None = None
    page_size: int = 0
    overlap_seconds: int = 300
    budget_share: float = 0.8
    max_attempts: int = 5
    max_retry_seconds: float = 120.0
    fieldmap: str = ""
    fieldmap_overrides: str | None = None

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


def parse_connection(name: str, raw: Mapping[str, Any]) -> ConnectionSettings:
    """Validate one `[connections.NAME]` table into settings with per-CRM defaults."""
    known = {f.name for f in fields(ConnectionSettings)} - {"name"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SettingsError(f"connection {name!r}: unknown keys {unknown}")
    crm = raw.get("crm")
    if crm not in CRMS:
        raise SettingsError(f"connection {name!r}: crm must be one of {sorted(CRMS)}, not {crm!r}")
    auth = raw.get("auth", CRMS[crm][0])
    if auth not in CRMS[crm]:
        raise SettingsError(f"connection {name!r}: auth for {crm} must be one of {CRMS[crm]}")
    if not raw.get("url"):
        raise SettingsError(f"connection {name!r}: url is required")
    creds = dict(raw.get("credentials", {}))
    validate_refs(name, creds)
    defaults = {
        "salesforce": {"api_version": "59.0", "page_size": 2000, "fieldmap": "salesforce"},
        "dynamics": {"api_version": "9.2", "page_size": 5000, "fieldmap": "dynamics"},
    }[crm]
    values = {**defaults, **raw, "crm": crm, "auth": auth, "credentials": creds}
    values["url"] = str(values["url"]).rstrip("/")
    if crm == "dynamics" and not values.get("tenant_id"):
        raise SettingsError(f"connection {name!r}: tenant_id is required for dynamics")
    size = int(values["page_size"])
    if not 0 < size <= (2000 if crm == "salesforce" else 5000):
        raise SettingsError(f"connection {name!r}: page_size {size} out of range for {crm}")
    share = float(values.get("budget_share", 0.8))
    if not 0 < share <= 1:
        raise SettingsError(f"connection {name!r}: budget_share must be in (0, 1], not {share}")
    return ConnectionSettings(name=name, **values)


def load_connections(path: str | Path) -> dict[str, ConnectionSettings]:
    """All connections of a config file, by name."""
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    tables = data.get("connections", {})
    return {name: parse_connection(name, raw) for name, raw in tables.items()}
