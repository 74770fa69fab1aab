"""No command surprises the database (issue 15, item 2): reading and writing commands never
create a database or migrate it; a missing SQLite file or a schema that is not the newest stops
the command with one line and exit 2, saying what to run. Only ``db upgrade``, ``run``,
``sync`` and ``demo`` create and migrate (``run`` and ``sync`` only while
``[database] auto_upgrade`` is true).

Regressions: ``invoices list`` migrated the database silently, and ``status`` run in the wrong
directory created a new empty ledger and reported on it."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from billing_core.adapters.db import make_engine
from jobs.cli import main
from jobs.migrate import current, head, upgrade


def _cli(*args: str, config: Path | None = None) -> Result:
    pre = ["--config", str(config)] if config else []
    return CliRunner().invoke(main, [*pre, *args])


def _revision(db: Path) -> str | None:
    engine = make_engine(f"sqlite:///{db}")
    try:
        return current(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", [["status"], ["invoices", "list"], ["db", "status"],
                                     ["accounts", "list"], ["quarantine", "list"]])
def test_a_command_on_a_missing_sqlite_file_names_it_and_creates_nothing(
        tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "elsewhere" / "ledger.db"
    db.parent.mkdir()
    result = _cli("--database-url", f"sqlite:///{db}", *command)
    assert result.exit_code == 2, result.output
    assert f"{db} does not exist" in result.output
    assert "ledgerbridge db upgrade" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not db.exists()


def test_an_older_schema_is_refused_until_db_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine, "0005")
    engine.dispose()
    url = f"sqlite:///{db}"
    for command in (["invoices", "list"], ["products", "add", "--sku", "S", "--name", "S"]):
        result = _cli("--database-url", url, *command)
        assert result.exit_code == 2, result.output
        assert result.output.strip() == (
            f"error: config: database: schema is at 0005, this version needs {head()}: "
            "run `ledgerbridge db upgrade`")
    assert _revision(db) == "0005"                      # nothing migrated it
    assert _cli("--database-url", url, "db", "upgrade").exit_code == 0
    assert _revision(db) == head()
    assert _cli("--database-url", url, "invoices", "list").exit_code == 0


def test_a_schema_newer_than_the_code_is_named(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    result = _cli("--database-url", f"sqlite:///{db}", "invoices", "list")
    assert result.exit_code == 2
    assert "schema 9999 is newer than this version knows" in result.output


def test_sync_upgrades_unless_configured_not_to(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine, "0005")
    engine.dispose()
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\nauto_upgrade = false\n')
    refused = _cli("sync", config=config)
    assert refused.exit_code == 2 and "run `ledgerbridge db upgrade`" in refused.output
    assert _revision(db) == "0005"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n')
    _cli("sync", config=config)          # no connection configured: what matters is the schema
    assert _revision(db) == head()


def test_a_write_lock_held_past_the_busy_timeout_is_one_line_and_exit_3(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: another process (the daemon's bill run, a long import, a shell left in a
    transaction) holds the write lock past the busy timeout: a writing command stops with
    one line naming the database and exit 3 (the database could not be had), nothing
    written; not a traceback and exit 1. (PostgreSQL waits for row locks without a timeout.)"""
    import sqlite3

    import billing_core.adapters.db as db_module

    db = tmp_path / "ledger.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    engine.dispose()
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = _cli("--database-url", f"sqlite:///{db}", "products", "add", "--sku", "S",
                      "--name", "S")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 3, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: database: "), result.output
    assert "locked" in lines[0] and str(db) in lines[0], result.output
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM products")).scalar() == 0
    finally:
        engine.dispose()
