"""``ledgerbridge tokens``: API bearer tokens (create, list, revoke).

A token is printed once, at creation; the database keeps only its hash. Lists show the public
prefix, never the secret.
"""
from __future__ import annotations

import click

from jobs.api.auth import SCOPES, create_token, list_tokens, revoke_token
from jobs.cli.common import AppContext, emit, json_option, pass_app


@click.group("tokens")
def tokens() -> None:
    """API tokens for payment systems, portals and admin scripts."""


@tokens.command("create")
@click.option("--name", required=True, help="Who uses it (e.g. 'stripe-webhooks').")
@click.option("--scope", "scopes", required=True, multiple=True, type=click.Choice(SCOPES),
              help="billing:read, billing:write (includes read) or admin (includes all).")
@json_option
@pass_app
def create(app: AppContext, name: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Create a token. It is shown once: store it in the caller's secret store."""
    with app.uow() as uow:
        token_id, token = create_token(uow, name, list(scopes))
        uow.commit()
    if as_json:
        emit({"id": token_id, "name": name, "scopes": " ".join(scopes), "token": token},
             as_json=True)
        return
    click.echo(f"token {token_id} ({name}, {' '.join(scopes)}) created. It is shown once:")
    click.echo(token)


@tokens.command("list")
@json_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """Tokens with their prefix, scopes and state (never the secret)."""
    with app.uow(read_only=True) as uow:
        rows = list_tokens(uow.conn)
    emit(rows, ["id", "name", "prefix", "scopes", "created_at", "revoked_at"],
         as_json=as_json, title="API tokens")


@tokens.command("revoke")
@click.argument("token")
@json_option
@pass_app
def revoke(app: AppContext, token: str, as_json: bool) -> None:
    """Revoke a token by id, name or prefix. Requests with it get 401 from then on."""
    with app.uow() as uow:
        result = revoke_token(uow, token)
        uow.commit()
    if as_json:
        emit(result, as_json=True)
    else:
        click.echo(f"token {result['id']} ({result['name']}) revoked")


COMMANDS = [tokens]
