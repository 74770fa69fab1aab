"""``ledgerbridge db``: the schema."""
from __future__ import annotations

import click
from sqlalchemy.engine import make_url

from billing_core.adapters.db import make_engine
from config.settings import ConfigError
from jobs.cli.common import AppContext, pass_app, sqlite_file
from jobs.migrate import current, head
from jobs.migrate import upgrade as do_upgrade


@click.group()
def db() -> None:
    """Database schema (Alembic migrations shipped in the package)."""


@db.command()
@pass_app
def upgrade(app: AppContext) -> None:
    """Bring the database to the newest schema (safe to run again)."""
    engine = make_engine(app.settings.database_url)
    try:
        before = current(engine)
        after = do_upgrade(engine)
    finally:
        engine.dispose()
    click.echo(f"database {_safe_url(app.settings.database_url)}: "
               f"{before or 'empty'} -> {after}")


@db.command()
@pass_app
def status(app: AppContext) -> None:
    """Show the schema revision of the database."""
    missing = sqlite_file(make_url(app.settings.database_url))
    if missing is not None and not missing.exists():
        raise ConfigError(f"database: {missing} does not exist (`ledgerbridge db upgrade` "
                          f"creates it)")
    engine = make_engine(app.settings.database_url)
    try:
        rev = current(engine)
    finally:
        engine.dispose()
    click.echo(f"database {_safe_url(app.settings.database_url)}: revision {rev or 'empty'}"
               f" (newest {head()})")


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
