"""`ledgerbridge sandbox`: run the sandbox CRM in the foreground (register `sandbox_command`).

Rules this module keeps: a thin click wrapper over `server.serve_forever`; no work at import.
`python -m connectors.sandbox` runs the same command (what `remote.RemoteSandbox` starts).
"""

from __future__ import annotations

import click

SIDES = ("salesforce", "dataverse")


@click.command("sandbox")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 = any free port).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generated data.")
@click.option("--accounts", default=1000, show_default=True, type=click.IntRange(0),
              help="Number of seeded accounts (generated lazily; 1,000,000 is fine).")
@click.option("--quotes", default=None, type=click.IntRange(0),
              help="Number of seeded Salesforce quotes (default: one per two accounts, at "
                   "least 8).")
@click.option("--side", "sides", multiple=True, type=click.Choice(SIDES),
              help="CRM to serve (repeat for both; default: both).")
@click.option("--ca-dir", type=click.Path(file_okay=False),
              help="Keep the CA here and reuse it at the next start (default: a new CA in a "
                   "temporary directory at every start).")
def sandbox_command(port: int, seed: int, accounts: int, quotes: int | None,
                    sides: tuple[str, ...], ca_dir: str | None) -> None:
    """Run the local sandbox CRM (Salesforce and Dataverse APIs over HTTPS)."""
    from .server import serve_forever

    serve_forever(port=port, seed=seed, accounts=accounts, quotes=quotes,
                  sides=sides or SIDES, ca_dir=ca_dir)
