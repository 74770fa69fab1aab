"""Alembic, driven from code: the migration scripts ship inside the package (jobs/migrations),
so an installed wheel can migrate without an alembic.ini on disk.

On PostgreSQL an advisory lock makes concurrent upgrades (several workers starting at once)
take turns; on SQLite the write lock does the same.
"""
from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

_MIGRATION_LOCK = 0x6C62_6D67  # "lbmg"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "jobs:migrations")
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def known(revision: str) -> bool:
    """Whether this version ships ``revision`` (False: the database is newer than the code)."""
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown revision
        return False
    return True


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Upgrade to ``revision``; a database already there costs one query."""
    if revision == "head" and current(engine) == head():
        return head()
    cfg = alembic_config()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current(engine) or ""
