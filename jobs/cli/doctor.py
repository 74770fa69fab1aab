"""``ledgerbridge doctor``: check the config, the database and every connection, fast, and say
how to fix each problem found.

Rules kept here:
- Fast: the probes use bounded timeouts (``PROBE_CONNECT`` s to connect, ``PROBE_READ`` s to
  read, or the connection's own if shorter) and no retries (a doctor reports what it sees now;
  the worker is the one that retries), and the connections are checked side by side. A host
  that does not answer costs ``PROBE_CONNECT`` seconds per call, not the worker's retry budget.
- Every failed check gets one ``problem:`` line after the table: what failed, why (the error in
  the CRM's or the library's words) and what to do (``advice``). Nothing here raises for a
  failure it can report; the exit code is 1 when any check failed (``jobs.cli.exits``).
"""
from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import click

from connectors.registry import doctor_report
from connectors.settings import ConnectionSettings
from jobs.cli import exits
from jobs.cli.common import AppContext, emit, pass_app

PROBE_CONNECT = 3.0
PROBE_READ = 10.0


def probe_settings(settings: ConnectionSettings) -> ConnectionSettings:
    """The connection's settings for a quick look: short timeouts, one attempt."""
    return replace(settings, connect_timeout=min(settings.connect_timeout, PROBE_CONNECT),
                   read_timeout=min(settings.read_timeout, PROBE_READ), max_attempts=1,
                   max_retry_seconds=min(settings.max_retry_seconds, PROBE_READ))


_ADVICE: list[tuple[str, str]] = [
    # (pattern in "check: detail", what to do); first match wins.
    (r"database: .*does not exist", "create it: ledgerbridge --config FILE db upgrade (or point "
     "[database] url / LEDGERBRIDGE_DATABASE_URL at the existing ledger)"),
    (r"database: .*(revision|schema)", "migrate it: ledgerbridge --config FILE db upgrade "
     "(back it up first: docs/OPERATIONS.md#backups)"),
    (r"^database:", "check [database] url or LEDGERBRIDGE_DATABASE_URL, and that the database "
     "server answers from this host"),
    (r"^connections:", "add a [connections.NAME] table: ledgerbridge init --crm ... -o FILE "
     "writes one (docs/CRM_SETUP.md)"),
    (r"environment variable (\w+)", r"export \1=... in the environment of the command (under "
     "systemd: the unit's EnvironmentFile)"),
    (r"secrets file|not in secrets file|no secrets_file",
     "check secrets_file and its keys (a table named after the connection, or top level)"),
    (r"missing credentials", "add the named key under [connections.NAME.credentials]"),
    (r"discovery/instance", "the token authority is checked with Microsoft's instance "
     "discovery, which this host cannot reach: allow login.microsoftonline.com; only for the "
     "local sandbox set validate_authority = false"),
    (r"CERTIFICATE_VERIFY|certificate verify",
     "the CRM's certificate is not trusted here: for a proxy that re-signs TLS or the sandbox, "
     "set ca_bundle to its CA file"),
    (r"SSLError", "the TLS handshake failed: check that url names the CRM's HTTPS address and "
     "port; behind a proxy that re-signs TLS (or for the sandbox) set ca_bundle to its CA file"),
    (r"ConnectTimeout|ConnectionError|timed out|ReadTimeout|Max retries|Name or service",
     "the CRM did not answer: check url, DNS, proxy and firewall from this host (for the "
     "sandbox: is it running? ledgerbridge sandbox --write-config FILE)"),
    (r"invalid_client|unauthorized_client|AADSTS7000215|AADSTS700016|invalid client",
     "the CRM refused the client id or secret: check client_id and the secret's value (a "
     "rotated secret, a connected app not yet active, an app registration in another tenant)"),
    (r"invalid_grant|INVALID_LOGIN|user hasn't approved",
     "the CRM refused the login: check the integration user (run-as user of the client "
     "credentials flow, password and security token, or the JWT certificate)"),
    (r"AADSTS90002|[Tt]enant .* not found", "check tenant_id (the Entra directory id)"),
    (r"(401|403|INSUFFICIENT_ACCESS|API_DISABLED)",
     "the user lacks a permission: API Enabled (Salesforce) or the application user's "
     "security role (Dataverse): docs/CRM_SETUP.md"),
    (r"has no field|lacks|no field", "create the field(s) in the CRM, or map your own names "
     "with fieldmap_overrides (docs/CRM_SETUP.md#field-maps)"),
    (r"not updateable|not writable|cannot update",
     "give the integration user edit access (field-level security) to the field(s)"),
    (r"api budget", "the CRM's daily API allowance is used up: wait for it to reset, or "
     "raise budget_share"),
    (r"field map", "check fieldmap / fieldmap_overrides: a built-in name (salesforce, "
     "salesforce_cpq, dynamics) or a readable TOML file"),
]


def advice(check: str, detail: str) -> str:
    """What to do about one failed check (a generic pointer when nothing matches)."""
    text = f"{check}: {detail}"
    for pattern, todo in _ADVICE:
        found = re.search(pattern, text)
        if found:
            return found.expand(todo)
    return "see docs/CRM_SETUP.md and ledgerbridge -vv doctor for the details"


def _connection_rows(name: str, settings: ConnectionSettings) -> list[dict[str, str]]:
    return [{"check": f"{name}: {r.check}", "status": r.status, "detail": r.detail}
            for r in doctor_report(probe_settings(settings))]


@click.command("doctor")
@pass_app
def doctor_command(app: AppContext) -> None:
    """Check the config, the database, each connection's login and field map, in seconds;
    one line per problem with what to do."""
    from jobs.migrate import current, head

    # The settings were checked when the command line started: a bad config never gets here.
    rows: list[dict[str, Any]] = [{"check": "config", "status": "ok",
                                   "detail": app.config_path or "defaults"}]
    try:
        rev = current(app.engine)
        rows.append({"check": "database", "status": "ok" if rev == head() else "fail",
                     "detail": f"revision {rev} (newest {head()})"})
    except Exception as exc:  # noqa: BLE001 - the doctor reports any failure, it does not crash
        rows.append({"check": "database", "status": "fail", "detail": str(exc)[:300]})
    configured = app.settings.connections
    if not configured:
        rows.append({"check": "connections", "status": "cannot verify",
                     "detail": "none configured ([connections.NAME] in the config)"})
    with ThreadPoolExecutor(max_workers=max(1, min(len(configured), 8))) as pool:
        for found in pool.map(lambda item: _connection_rows(*item), configured.items()):
            rows.extend(found)
    emit(rows, ["check", "status", "detail"], as_json=False, title="doctor")
    failed = [r for r in rows if r["status"] == "fail"]
    for r in failed:
        click.echo(f"problem: {r['check']} failed: {r['detail']} -> fix: "
                   f"{advice(r['check'], r['detail'])}")
    for r in rows:
        if r["status"] == "cannot verify":
            click.echo(f"note: {r['check']} could not be verified: {r['detail']} -> "
                       f"{advice(r['check'], r['detail'])}")
    if failed:
        sys.exit(exits.ATTENTION)


COMMANDS = [doctor_command]
