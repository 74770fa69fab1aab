"""``ledgerbridge sandbox [--write-config FILE]`` and ``ledgerbridge init``: set-up without
guesswork.

- ``sandbox`` is the sandbox CRM's own command (``connectors.sandbox.cli``) with two more
  options: ``--write-config FILE`` writes a ready config for both CRMs once the sandbox listens
  (before its "admin:" line, so a script waiting for that line finds the file), and ``--force``.
  With ``--write-config`` the CA is kept beside the config (``--ca-dir``, default
  ``<dir of FILE>/sandbox-ca``), so the same command line restarts a sandbox the config still
  fits. The files: ``jobs.cli.configs``.
- With ``--notify`` (change events), a side given no key of its own sends the sandbox's test
  values (fixed by ``--seed``, as its client secrets are: :func:`default_notify_secrets`), and
  ``--write-config`` writes the ``[connections.NAME.events]`` that accept what it sends, so a
  daemon started with that config takes the sandbox's events with no further set-up.
- ``init`` writes a commented config for a real org from flags; the secret itself is never
  asked for, only the name of the environment variable that will hold it.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import click

from connectors.sandbox.cli import sandbox_command as _sandbox
from jobs.cli.common import AppContext
from jobs.cli.configs import (
    check_writable,
    init_config,
    restart_command,
    write_checked,
    write_sandbox_config,
)

#: ``--notify*`` options kept in the restart line (none holds a secret), with their defaults.
_NOTIFY_RESTART = {"notify": None, "notify_dataverse": None, "notify_salesforce": None,
                   "notify_salesforce_json": None, "notify_salesforce_form": "soap",
                   "notify_dataverse_connection": "d365", "notify_salesforce_connection": "sf",
                   "notify_salesforce_org_id": None}
_NOTIFY_SECRETS = ("notify_dataverse_key", "notify_dataverse_header", "notify_dataverse_query",
                   "notify_salesforce_query", "notify_secret")


def _test_value(seed: int, what: str) -> str:
    return "sbx-" + hashlib.sha256(f"ledgerbridge-sandbox:{seed}:{what}".encode()).hexdigest()[:32]


def default_notify_secrets(seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the sandbox's test secrets where a ``--notify`` target is given and no
    secret of that kind is: the Dataverse webhook key (``?code=``) unless a key, header or
    query parameter is given, and the HMAC secret of the JSON callout."""
    if not any(options.get(k) for k in ("notify", "notify_dataverse", "notify_salesforce",
                                         "notify_salesforce_json")):
        return options
    out = dict(options)
    if not any(options.get(k) for k in ("notify_dataverse_key", "notify_dataverse_header",
                                         "notify_dataverse_query")):
        out["notify_dataverse_key"] = _test_value(seed, "webhook-key")
    if not options.get("notify_secret"):
        out["notify_secret"] = _test_value(seed, "hmac-secret")
    return out


def _notify_restart(options: dict[str, Any]) -> tuple[str, ...]:
    line: list[str] = []
    for key, default in _NOTIFY_RESTART.items():
        value = options.get(key)
        if value is not None and value != default:
            line += ["--" + key.replace("_", "-"), str(value)]
    return tuple(line)


@click.pass_context
def _sandbox_main(ctx: click.Context, /, port: int, seed: int, accounts: int, quotes: int | None,
                  sides: tuple[str, ...], ca_dir: str | None, write_config: str | None,
                  force: bool, **notify_options: Any) -> None:
    from connectors.sandbox.cli import notify_config
    from connectors.sandbox.server import serve_forever

    on_ready = None
    given_secrets = [k for k in _NOTIFY_SECRETS if notify_options.get(k)]
    notify_options = default_notify_secrets(seed, notify_options)
    if write_config is not None:
        target = Path(write_config).absolute()
        check_writable(target, force=force)      # before the sandbox starts, not after
        ca_dir = str(Path(ca_dir).absolute()) if ca_dir else str(target.parent / "sandbox-ca")
        app = ctx.find_object(AppContext)
        database_url = app.database_url if app is not None else None

        def on_ready(sbx: Any) -> None:
            restart = restart_command(port=sbx.port, seed=seed, accounts=accounts,
                                      quotes=quotes, sides=sides, ca_dir=str(ca_dir),
                                      notify=_notify_restart(notify_options))
            note = ("(add the " + ", ".join("--" + k.replace("_", "-") for k in given_secrets)
                    + " option(s) given at the first start: the secrets file has their values)"
                    if given_secrets else "")
            secrets = write_sandbox_config(sbx, target, database_url=database_url,
                                           restart=restart, note=note)
            print(f"  config:               {target}\n"
                  f"    secrets in {secrets} (mode 0600); try: "
                  f"ledgerbridge --config {target} doctor")

    serve_forever(port=port, seed=seed, accounts=accounts, quotes=quotes,
                  sides=sides or ("salesforce", "dataverse"), ca_dir=ca_dir, on_ready=on_ready,
                  notify=notify_config(**notify_options))


sandbox_command = click.Command(
    "sandbox", callback=_sandbox_main, help=_sandbox.help,
    params=[*_sandbox.params,
            click.Option(["--write-config"], type=click.Path(dir_okay=False),
                         help="Write a ready config for both CRMs to this file (secrets in "
                              "FILE's .secrets.toml beside it, mode 0600; the CA kept in "
                              "--ca-dir, default sandbox-ca/ beside it)."),
            click.Option(["--force"], is_flag=True,
                         help="Replace a --write-config file ledgerbridge did not write.")])


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@click.command("init")
@click.option("--crm", type=click.Choice(["salesforce", "dynamics"]), required=True,
              help="The CRM of the connection.")
@click.option("--url", required=True, help="The org's or environment's URL.")
@click.option("--client-id", required=True,
              help="The connected app's consumer key or the app registration's client id.")
@click.option("--secret-env", required=True,
              help="Name of the environment variable that will hold the client secret.")
@click.option("--tenant-id", help="Dynamics only: the Entra tenant (directory) id.")
@click.option("--name", default=None, help="Connection name (default: sf or d365).")
@click.option("--database-url", "db_url", help="The ledger's URL (default: "
              "sqlite:///ledgerbridge.db in the working directory).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The config file to write.")
@click.option("--force", is_flag=True, help="Replace a file ledgerbridge did not write.")
def init_command(crm: str, url: str, client_id: str, secret_env: str, tenant_id: str | None,
                 name: str | None, db_url: str | None, output: str, force: bool) -> None:
    """Write a commented config for a real Salesforce org or Dynamics 365 environment."""
    if not url.startswith("https://"):
        raise click.BadParameter(f"{url!r}: must start with https://", param_hint="'--url'")
    if not _NAME.fullmatch(secret_env):
        raise click.BadParameter(f"{secret_env!r}: not an environment variable name (letters, "
                                 "digits, _)", param_hint="'--secret-env'")
    if crm == "dynamics" and not tenant_id:
        raise click.UsageError("--tenant-id is required for dynamics (the Entra directory id)")
    name = name or ("sf" if crm == "salesforce" else "d365")
    if not _NAME.fullmatch(name):
        raise click.BadParameter(f"{name!r}: letters, digits and _ only", param_hint="'--name'")
    path = Path(output)
    write_checked(path, init_config(crm=crm, url=url.rstrip("/"), client_id=client_id,
                                    secret_env=secret_env, name=name, tenant_id=tenant_id,
                                    database_url=db_url), force=force)
    click.echo(f"wrote {path}\nnext:\n  export {secret_env}=...   # the client secret\n"
               f"  ledgerbridge --config {path} db upgrade\n"
               f"  ledgerbridge --config {path} doctor")
    if db_url is None:
        click.echo("(the ledger is sqlite:///ledgerbridge.db in the directory you run it from; "
                   "--database-url to choose)", err=True)


COMMANDS = [sandbox_command, init_command]
