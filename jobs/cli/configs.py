"""Config files ledgerbridge writes for people: the sandbox's (``sandbox --write-config``,
``demo --keep``) and a real org's first one (``init``).

Rules kept here:
- A secret never goes into a config file. The sandbox's client secrets go into a secrets file
  beside the config (``<name>.secrets.toml``, created with mode 0600, one table per
  connection) that the config names with ``secrets_file`` and ``file:client_secret``. A real
  org's secret is an ``env:NAME`` reference; its value is never asked for or written.
- With ``--notify`` the sandbox sends change events; its config then has
  ``[connections.sf.events]`` / ``[connections.d365.events]`` with what those events carry
  (the organization id; the webhook key and HMAC secret as ``file:`` references into the same
  secrets file), so a daemon started with it accepts them (``sandbox_events``).
- Why a file for the sandbox and not ``env:`` with ``export`` lines: the config is meant to be
  used as it is from any later shell, cron job or service (``ledgerbridge --config FILE sync``),
  and a kept demo config must still work after its sandbox is restarted, long after the
  environment of the command that wrote it is gone. The sandbox's secrets are test values fixed
  by its seed; the file keeps them out of the config all the same.
- Every path written into a sandbox config is absolute, so it works from any directory
  (``init`` keeps the default ledger, ``sqlite:///ledgerbridge.db`` in the working directory).
- A file is replaced only when ledgerbridge wrote it (its first line is ``HEADER``) or when
  asked (``force``); anything else is refused, naming the file.
- Every config written here is loaded back with ``load_settings`` before it is kept, so what
  ``init`` writes is what ``doctor`` accepts.
- Beside a sandbox config goes ``<name>.tax-rates.csv``: a rate for every country the sandbox
  seeds (:data:`SANDBOX_TAX_RATES`, sample figures), for ``tax-rates import``, so the
  sandbox's accounts can be billed (an account of a country without a rate is not).
"""
from __future__ import annotations

import json
import os
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.settings import ConfigError, load_settings

HEADER = "# Written by ledgerbridge"
SF_SECRET_ENV = "LEDGERBRIDGE_DEMO_SF_SECRET"
DV_SECRET_ENV = "LEDGERBRIDGE_DEMO_DV_SECRET"
#: Environment variables of the events secrets (``sandbox_config`` without a secrets file).
EVENT_SECRET_ENV = {("sf", "key"): "LEDGERBRIDGE_DEMO_SF_EVENTS_KEY",
                    ("sf", "hmac_secret"): "LEDGERBRIDGE_DEMO_SF_EVENTS_HMAC",
                    ("d365", "key"): "LEDGERBRIDGE_DEMO_DV_WEBHOOK_KEY"}
#: The name in the secrets file of each events secret.
_EVENT_SECRET_FILE_KEY = {("sf", "key"): "events_key", ("sf", "hmac_secret"): "hmac_secret",
                          ("d365", "key"): "webhook_key"}


def sandbox_secrets(sbx: Any) -> dict[str, str]:
    """The client secret of each of the sandbox's connections (``sf``, ``d365``)."""
    out: dict[str, str] = {}
    if sbx.salesforce is not None:
        out["sf"] = (sbx.credentials or sbx.salesforce.credentials).client_secret
    if sbx.dataverse is not None:
        out["d365"] = sbx.dataverse.client_secret
    return out


def sandbox_events(sbx: Any) -> dict[str, dict[str, str]]:
    """What a connection's ``[connections.NAME.events]`` needs to accept the change events the
    sandbox sends (``sbx.notify``, ``--notify``), per connection (``sf``, ``d365``) whose side
    has a target: plain settings and, under ``secrets``, the secret values (the webhook key,
    the HMAC secret, a Salesforce URL key). Empty without ``--notify``. A Dataverse side that
    sends no key (no ``--notify-dataverse-key``, header or query parameter) cannot be
    authenticated and is left out."""
    notify = getattr(sbx, "notify", None)
    if notify is None:
        return {}
    out: dict[str, dict[str, str]] = {}
    if sbx.salesforce is not None and (notify.target("soap") or notify.target("json")):
        notifier = getattr(sbx, "notifier", None)
        org = notify.salesforce_org_id or (notifier.salesforce_org_id if notifier else None)
        sf: dict[str, str] = {}
        if org and notify.target("soap"):
            sf["organization_id"] = org
        if notify.hmac_secret:
            sf["secret:hmac_secret"] = notify.hmac_secret
        if notify.salesforce_query:
            name, value = next(iter(notify.salesforce_query.items()))
            sf["key_name"], sf["secret:key"] = name, value
        if sf:
            out["sf"] = sf
    if sbx.dataverse is not None and notify.target("dataverse"):
        if notify.dataverse_key:
            out["d365"] = {"auth": "webhook_key", "secret:key": notify.dataverse_key}
        elif notify.dataverse_headers:
            name, value = next(iter(notify.dataverse_headers.items()))
            out["d365"] = {"auth": "header", "key_name": name, "secret:key": value}
        elif notify.dataverse_query:
            name, value = next(iter(notify.dataverse_query.items()))
            out["d365"] = {"auth": "query_string", "key_name": name, "secret:key": value}
    return out


def _events_table(name: str, values: dict[str, str], ref: Any) -> str:
    """``[connections.NAME.events]`` with each secret as the reference ``ref(name, key)``."""
    lines = [f"\n[connections.{name}.events]        # the sandbox's --notify events"]
    for key, value in values.items():
        if key.startswith("secret:"):
            lines.append(f"{key[7:]} = {_q(ref(name, key[7:]))}")
        else:
            lines.append(f"{key} = {_q(value)}")
    return "\n".join(lines) + "\n"


def sandbox_event_secrets(sbx: Any) -> dict[str, dict[str, str]]:
    """The events secrets per connection, under their names in the secrets file."""
    return {name: {_EVENT_SECRET_FILE_KEY[(name, k[7:])]: v for k, v in values.items()
                   if k.startswith("secret:")}
            for name, values in sandbox_events(sbx).items()}


def sandbox_config(sbx: Any, database_url: str, *, connections: tuple[str, ...] = ("sf", "d365"),
                   extra: str = "", secrets_file: str | None = None
                   ) -> tuple[str, dict[str, str]]:
    """TOML config text for the sandbox's two CRMs, and the environment holding the secrets.

    With ``secrets_file`` the secrets are ``file:client_secret`` references into that file
    (written by the caller from ``sandbox_secrets``) and the environment is empty."""
    sf, dv = sbx.salesforce, sbx.dataverse
    env: dict[str, str] = {}
    secrets = sandbox_secrets(sbx)
    events = sandbox_events(sbx)

    def event_ref(name: str, key: str) -> str:
        if secrets_file is not None:
            return f"file:{_EVENT_SECRET_FILE_KEY[(name, key)]}"
        var = EVENT_SECRET_ENV[(name, key)]
        env[var] = events[name][f"secret:{key}"]
        return f"env:{var}"

    def secret(name: str, var: str) -> tuple[str, str]:
        if secrets_file is not None:
            return f'secrets_file = "{secrets_file}"\n', "file:client_secret"
        env[var] = secrets[name]
        return "", f"env:{var}"

    parts = [f'[database]\nurl = "{database_url}"\n', extra]
    if "sf" in connections and sf is not None:
        where, ref = secret("sf", SF_SECRET_ENV)
        parts.append(f'''
[connections.sf]
crm = "salesforce"
url = "{sbx.url}"
auth = "client_credentials"
ca_bundle = "{sbx.ca_bundle}"
{where}[connections.sf.credentials]
client_id = "{(sbx.credentials or sf.credentials).client_id}"
client_secret = "{ref}"
''')
        if "sf" in events:
            parts.append(_events_table("sf", events["sf"], event_ref))
    if "d365" in connections and dv is not None:
        where, ref = secret("d365", DV_SECRET_ENV)
        parts.append(f'''
[connections.d365]
crm = "dynamics"
url = "{sbx.url}"
auth = "client_secret"
tenant_id = "{dv.tenant}"
authority_host = "{sbx.url}"        # the sandbox issues the tokens
validate_authority = false          # the sandbox only: it cannot answer Microsoft's discovery
ca_bundle = "{sbx.ca_bundle}"
{where}[connections.d365.credentials]
client_id = "{dv.client_id}"
client_secret = "{ref}"
''')
        if "d365" in events:
            parts.append(_events_table("d365", events["d365"], event_ref))
    return "\n".join(parts), env


def restart_command(*, port: int, seed: int, accounts: int, quotes: int | None,
                    sides: tuple[str, ...], ca_dir: str,
                    notify: tuple[str, ...] = ()) -> list[str]:
    """The command line that starts a sandbox again as it is (URL, CA, credentials; ``notify``:
    the ``--notify*`` options that hold no secret)."""
    line = ["ledgerbridge", "sandbox", "--port", str(port), "--seed", str(seed),
            "--accounts", str(accounts), *notify]
    if quotes is not None:
        line += ["--quotes", str(quotes)]
    for side in sides:
        line += ["--side", side]
    return [*line, "--ca-dir", ca_dir]


def secrets_path(config: Path) -> Path:
    return config.with_name(f"{config.stem}.secrets.toml")


#: A rate for every country the sandbox CRM seeds (sample figures, from 2000-01-01).
SANDBOX_TAX_RATES = (("US", "0"), ("GB", "0.20"), ("DE", "0.19"), ("FR", "0.20"),
                     ("NL", "0.21"), ("ES", "0.21"), ("IT", "0.22"), ("JP", "0.10"),
                     ("CA", "0.05"), ("AU", "0.10"), ("CH", "0.081"), ("SE", "0.25"),
                     ("IN", "0.18"), ("BH", "0.10"))


def rates_path(config: Path) -> Path:
    return config.with_name(f"{config.stem}.tax-rates.csv")


def write_sandbox_rates(path: Path) -> Path:
    """The sandbox countries' sample rates as a ``tax-rates import`` CSV."""
    path.write_text("country,region,rate,from,name\n" + "".join(
        f"{country},,{rate},2000-01-01,Sandbox sample {country}\n"
        for country, rate in SANDBOX_TAX_RATES), encoding="utf-8")
    return path


def _q(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value)


def check_writable(path: Path, *, force: bool) -> None:
    if path.exists() and not force and not path.read_text(
            encoding="utf-8", errors="replace").startswith(HEADER):
        raise ConfigError(f"{path} exists and was not written by ledgerbridge: choose another "
                          "file, or pass --force to replace it")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (0600 even if it existed before)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _keep_checked(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` once it loads as settings (the file is left untouched if not)."""
    trial = path.with_name(f".{path.name}.new")
    trial.write_text(text, encoding="utf-8")
    try:
        load_settings(trial)
    except BaseException:
        trial.unlink()
        raise
    trial.replace(path)


def write_sandbox_config(sbx: Any, path: Path, *, database_url: str | None,
                         restart: list[str], note: str = "") -> Path:
    """Write the sandbox's config to ``path`` and its secrets beside it; returns the secrets
    file. ``restart`` is the command line that restarts this sandbox as it is now."""
    path = path.absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    secrets = secrets_path(path)
    events = sandbox_event_secrets(sbx)
    write_private(secrets, f"{HEADER} for the sandbox CRM at {sbx.url}: test values only.\n"
                  + "".join(f"[{name}]\nclient_secret = {_q(value)}\n"
                            + "".join(f"{k} = {_q(v)}\n" for k, v in events.get(name, {}).items())
                            for name, value in sandbox_secrets(sbx).items()))
    url = database_url or f"sqlite:///{path.parent / 'sandbox.db'}"
    text, _env = sandbox_config(sbx, url, secrets_file=str(secrets))
    rates = write_sandbox_rates(rates_path(path))
    head = [f"{HEADER} for the sandbox CRM at {sbx.url}, "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
            "# The client secrets are in the secrets file named below (mode 0600), not here.",
            "# This config works while that sandbox runs. To start it again with the same URL,",
            "# CA and credentials (its data back at the seeded state):",
            f"#   {shlex.join(restart)}",
            "# If that port is taken, or for a fresh sandbox and config in one go:",
            f"#   ledgerbridge sandbox --port 0 --write-config {shlex.quote(str(path))} --force",
            *(f"# {line}" for line in note.splitlines()),
            "# Sample tax rates for the sandbox's countries (its accounts are not billed",
            "# without them):",
            f"#   ledgerbridge --config {shlex.quote(str(path))} tax-rates import "
            f"{shlex.quote(str(rates))}",
            "# Check it: ledgerbridge --config "
            f"{shlex.quote(str(path))} doctor", ""]
    _keep_checked(path, "\n".join(head) + text)
    return secrets


def init_config(*, crm: str, url: str, client_id: str, secret_env: str, name: str,
                tenant_id: str | None, database_url: str | None) -> str:
    """A commented config for one real CRM connection (``write_checked`` loads it back)."""
    db = database_url or "sqlite:///ledgerbridge.db"
    lines = [
        f"{HEADER} init, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "# Every key with its default: config/defaults.example.toml and",
        "# config/connections.example.toml; CRM set-up: docs/CRM_SETUP.md.",
        "# Next: export the secret, then check everything with",
        "#   ledgerbridge --config THIS_FILE doctor",
        "",
        "[database]",
        "# The ledger. SQLite in the working directory by default; for several workers:",
        '# url = "postgresql://ledgerbridge@db.example.com/ledgerbridge" (pip install',
        "# 'ledgerbridge[postgres]'; a password belongs in LEDGERBRIDGE_DATABASE_URL instead).",
        f"url = {_q(db)}",
        "",
        f"[connections.{name}]",
    ]
    if crm == "salesforce":
        lines += [
            'crm = "salesforce"',
            "# Your My Domain URL (https://NAME.my.salesforce.com).",
            f"url = {_q(url)}",
            "# The connected app's OAuth client credentials flow, run as the integration user;",
            '# or "jwt" (private_key_file + username) or "password".',
            'auth = "client_credentials"',
            '# "salesforce_cpq" with Salesforce CPQ, or the path of your own field map.',
            'fieldmap = "salesforce"',
        ]
    else:
        lines += [
            'crm = "dynamics"',
            "# The environment URL (https://ORG.crm.dynamics.com).",
            f"url = {_q(url)}",
            "# The app registration's client secret; or \"certificate\" (private_key_file and",
            "# thumbprint under credentials).",
            'auth = "client_secret"',
            "# The Microsoft Entra tenant (directory) id of the app registration.",
            f"tenant_id = {_q(tenant_id or '')}",
            '# The zone your users enter dates in (an IANA name such as "Europe/Berlin").',
            'time_zone = "UTC"',
            'fieldmap = "dynamics"',
        ]
    lines += [
        "# A CA file for a corporate proxy that re-signs TLS:",
        '# ca_bundle = "/etc/ssl/certs/corporate-ca.pem"',
        "# Share of the CRM's daily API allowance ledgerbridge may spend before it stops a run:",
        "# budget_share = 0.8",
        "",
        f"[connections.{name}.credentials]",
        f"client_id = {_q(client_id)}",
        "# Never the secret itself: the environment variable that holds it (or file:KEY with",
        "# secrets_file). Under systemd, put it in the unit's EnvironmentFile.",
        f"client_secret = {_q('env:' + secret_env)}",
        "",
    ]
    return "\n".join(lines)


def write_checked(path: Path, text: str, *, force: bool) -> None:
    check_writable(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _keep_checked(path, text)
    except ConfigError as exc:
        raise ConfigError(f"{path} was not written: {exc}") from None
