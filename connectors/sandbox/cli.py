"""`ledgerbridge sandbox`: run the sandbox CRM in the foreground (register `sandbox_command`).

Rules this module keeps: a thin click wrapper over `server.serve_forever`; no work at import.
`python -m connectors.sandbox` runs the same command (what `remote.RemoteSandbox` starts).
The `--notify*` options (change events, notify.py) are `NOTIFY_OPTIONS`; a command that wraps
this one passes them through `notify_config(**options)`.
"""

from __future__ import annotations

from typing import Any

import click

SIDES = ("salesforce", "dataverse")
_P = click.FloatRange(0.0, 1.0)
_S = click.FloatRange(0.0)

NOTIFY_OPTIONS = [
    click.Option(["--notify"], metavar="URL",
                 help="Send change events: Dataverse webhooks to URL/events/dataverse/d365, "
                      "Salesforce outbound messages to URL/events/salesforce/sf (the JSON "
                      "callout form to .../sf/json with --notify-salesforce-form)."),
    click.Option(["--notify-dataverse"], metavar="URL",
                 help="The Dataverse webhook's full URL (wins over --notify)."),
    click.Option(["--notify-salesforce"], metavar="URL",
                 help="The outbound message (SOAP) endpoint's full URL (wins over --notify)."),
    click.Option(["--notify-salesforce-json"], metavar="URL",
                 help="The JSON callout's full URL (wins over --notify)."),
    click.Option(["--notify-salesforce-form"], type=click.Choice(["soap", "json", "both"]),
                 default="soap", show_default=True,
                 help="Which Salesforce form --notify sends."),
    click.Option(["--notify-dataverse-connection"], default="d365", show_default=True,
                 help="Connection name in the Dataverse URL built from --notify."),
    click.Option(["--notify-salesforce-connection"], default="sf", show_default=True,
                 help="Connection name in the Salesforce URLs built from --notify."),
    click.Option(["--notify-dataverse-key"], metavar="KEY",
                 envvar="LEDGERBRIDGE_SANDBOX_WEBHOOK_KEY",
                 help="WebhookKey authentication: sent as ?code=KEY."),
    click.Option(["--notify-dataverse-header"], metavar="'NAME: VALUE'", multiple=True,
                 help="HttpHeader authentication: a header sent with every webhook (repeat)."),
    click.Option(["--notify-dataverse-query"], metavar="NAME=VALUE", multiple=True,
                 help="HttpQueryString authentication: a query parameter (repeat)."),
    click.Option(["--notify-salesforce-query"], metavar="NAME=VALUE", multiple=True,
                 help="A query parameter on the Salesforce URLs (a token in the endpoint URL, "
                      "as outbound messages carry no custom header; repeat)."),
    click.Option(["--notify-salesforce-org-id"], metavar="ID",
                 help="OrganizationId in outbound messages (default: the sandbox org's)."),
    click.Option(["--notify-secret"], metavar="SECRET", envvar="LEDGERBRIDGE_SANDBOX_HMAC_SECRET",
                 help="HMAC-SHA256 key of the JSON callout's X-Signature header."),
    click.Option(["--notify-object"], metavar="NAME", multiple=True,
                 help="Send events for these objects only: Salesforce sObject types or Dataverse "
                      "entity sets (repeat; default: the billing objects of both CRMs)."),
    click.Option(["--notify-salesforce-fields"], metavar="OBJECT=F1,F2", multiple=True,
                 help="The outbound message's selected fields of OBJECT (repeat; default: "
                      "every non-null field)."),
    click.Option(["--notify-drop"], type=_P, default=0.0, help="Drop events (probability)."),
    click.Option(["--notify-duplicate"], type=_P, default=0.0,
                 help="Send messages twice (probability)."),
    click.Option(["--notify-reorder"], type=_P, default=0.0,
                 help="Send a message after the next one (probability)."),
    click.Option(["--notify-delay"], type=_S, default=0.0, help="Delay every delivery (s)."),
    click.Option(["--notify-seed"], type=int, default=None,
                 help="Seed of the fault draws (default: --seed)."),
    click.Option(["--notify-timeout"], type=click.FloatRange(0.001), default=5.0,
                 show_default=True, help="Timeout of every POST (s)."),
    click.Option(["--notify-retry-base"], type=_S, default=0.5, show_default=True,
                 help="Salesforce: first retry after this many seconds, then doubling."),
    click.Option(["--notify-retry-max"], type=_S, default=30.0, show_default=True,
                 help="Salesforce: longest wait between retries (s; the real one: 2 h)."),
    click.Option(["--notify-retry-window"], type=_S, default=300.0, show_default=True,
                 help="Salesforce: give up this long after the first attempt (s; the real "
                      "one: 24 h)."),
    click.Option(["--notify-queue"], type=click.IntRange(1), default=10_000, show_default=True,
                 help="Events waiting to be sent at most (more are refused and counted)."),
    click.Option(["--notify-ca-bundle"], type=click.Path(dir_okay=False),
                 help="CA bundle for HTTPS receivers (default: the system's)."),
]


def notify_config(**options: Any) -> Any:
    """The NotifyConfig the `--notify*` options describe, or None when no target is given."""
    from .notify import NotifyConfig

    if not any(options.get(k) for k in ("notify", "notify_dataverse", "notify_salesforce",
                                         "notify_salesforce_json")):
        given = [k for k in ("notify_dataverse_key", "notify_dataverse_header",
                             "notify_dataverse_query", "notify_salesforce_query",
                             "notify_secret", "notify_drop",
                             "notify_duplicate", "notify_reorder", "notify_delay",
                             "notify_object", "notify_salesforce_fields") if options.get(k)]
        if given:
            names = ", ".join("--" + k.replace("_", "-") for k in given)
            raise click.UsageError(f"{names} without a target: add --notify URL (or "
                                   "--notify-dataverse / --notify-salesforce[-json] URL)")
        return None
    headers = {}
    for item in options.get("notify_dataverse_header") or ():
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not 'NAME: VALUE'",
                                     param_hint="--notify-dataverse-header")
        headers[name.strip()] = value.strip()
    query = _pairs(options.get("notify_dataverse_query"), "--notify-dataverse-query")
    sf_query = _pairs(options.get("notify_salesforce_query"), "--notify-salesforce-query")
    fields = {}
    for item in options.get("notify_salesforce_fields") or ():
        name, sep, names = item.partition("=")
        if not sep or not name or not names:
            raise click.BadParameter(f"{item!r} is not OBJECT=F1,F2",
                                     param_hint="--notify-salesforce-fields")
        fields[name] = tuple(f.strip() for f in names.split(",") if f.strip())
    extra: dict[str, Any] = {"salesforce_fields": fields}
    if options.get("notify_object"):
        extra["objects"] = tuple(options["notify_object"])
    ca = options.get("notify_ca_bundle")
    return NotifyConfig(**extra,
        url=options.get("notify"), dataverse_url=options.get("notify_dataverse"),
        salesforce_url=options.get("notify_salesforce"),
        salesforce_json_url=options.get("notify_salesforce_json"),
        salesforce_form=options.get("notify_salesforce_form") or "soap",
        dataverse_connection=options.get("notify_dataverse_connection") or "d365",
        salesforce_connection=options.get("notify_salesforce_connection") or "sf",
        dataverse_key=options.get("notify_dataverse_key"), dataverse_headers=headers,
        dataverse_query=query, salesforce_query=sf_query,
        salesforce_org_id=options.get("notify_salesforce_org_id"),
        hmac_secret=options.get("notify_secret"),
        drop=options.get("notify_drop") or 0.0, duplicate=options.get("notify_duplicate") or 0.0,
        reorder=options.get("notify_reorder") or 0.0, delay=options.get("notify_delay") or 0.0,
        fault_seed=options.get("notify_seed"), timeout=options.get("notify_timeout") or 5.0,
        retry_base=options.get("notify_retry_base", 0.5),
        retry_max_interval=options.get("notify_retry_max", 30.0),
        retry_window=options.get("notify_retry_window", 300.0),
        queue_size=options.get("notify_queue") or 10_000, verify=ca if ca else True)


def _pairs(items: Any, option: str) -> dict[str, str]:
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=option)
        out[name] = value
    return out


def _run(port: int, seed: int, accounts: int, quotes: int | None, sides: tuple[str, ...],
         ca_dir: str | None, **options: Any) -> None:
    """Run the local sandbox CRM (Salesforce and Dataverse APIs over HTTPS)."""
    from .server import serve_forever

    serve_forever(port=port, seed=seed, accounts=accounts, quotes=quotes,
                  sides=sides or SIDES, ca_dir=ca_dir, notify=notify_config(**options))


sandbox_command = click.Command(
    "sandbox", callback=_run, help=_run.__doc__, params=[
        click.Option(["--port"], default=8443, show_default=True,
                     type=click.IntRange(0, 65535), help="Port to listen on (0 = any free port)."),
        click.Option(["--seed"], default=0, show_default=True, type=int,
                     help="Seed of the generated data."),
        click.Option(["--accounts"], default=1000, show_default=True, type=click.IntRange(0),
                     help="Number of seeded accounts (generated lazily; 1,000,000 is fine)."),
        click.Option(["--quotes"], default=None, type=click.IntRange(0),
                     help="Number of seeded Salesforce quotes (default: one per two accounts, "
                          "at least 8)."),
        click.Option(["--side", "sides"], multiple=True, type=click.Choice(SIDES),
                     help="CRM to serve (repeat for both; default: both)."),
        click.Option(["--ca-dir"], type=click.Path(file_okay=False),
                     help="Keep the CA here and reuse it at the next start (default: a new CA "
                          "in a temporary directory at every start)."),
        *NOTIFY_OPTIONS])
