"""`ledgerbridge sandbox`: run the sandbox CRM in the foreground (register `sandbox_command`).

Rules this module keeps: a thin click wrapper over `server.serve_forever`; no work at import.
"""

from __future__ import annotations

import click


@click.command("sandbox")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 = any free port).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generated data.")
@click.option("--accounts", default=1000, show_default=True, type=click.IntRange(0),
              help="Number of seeded accounts (generated lazily; 1,000,000 is fine).")
def sandbox_command(port: int, seed: int, accounts: int) -> None:
    """Run the local sandbox CRM (Salesforce and Dataverse APIs over HTTPS)."""
    from .server import serve_forever

    serve_forever(port=port, seed=seed, accounts=accounts)
