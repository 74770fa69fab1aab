"""What every command shares: settings, the database, error handling and output.

- ``AppContext`` loads and checks the settings when the command line starts, before any
  command runs (a bad config stops everything, even a command that would not read it), and
  opens the engine lazily (no command opens a database it does not need).
- No command surprises the database: only the commands in ``UPGRADING`` (``run``, ``sync``,
  ``demo``, ``db upgrade``) create a missing database or bring an older schema to the newest
  migration, and ``run``/``sync`` only while ``[database] auto_upgrade`` is true. Every other
  command, reading or writing, needs the database to exist at the newest schema; otherwise it
  stops with one line naming the path (a SQLite file that does not exist is never created) or
  the revisions, and what to run (exit 2, nothing written).
- ``jobs.cli.group.LedgerGroup`` turns a ``LedgerError``, ``ConfigError`` or usage error into
  one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
- ``emit`` prints a table for people or JSON for scripts (``--json``), Decimal and dates as text;
  tables and error lines go through ``jobs.cli.render`` (escaped, wrapped, money in major units).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import URL, Engine, make_url

from billing_core.adapters.db import UnitOfWork, make_engine
from billing_core.domain.ids import MAX_ID
from config.settings import ConfigError, Settings, load_settings

T = TypeVar("T")

#: Commands that may create the database and bring it to the newest schema themselves.
UPGRADING = frozenset({"run", "sync", "demo", "db upgrade"})
#: Of those, the ones that do it only while ``[database] auto_upgrade`` is true.
AUTO_UPGRADE_ONLY = frozenset({"run", "sync"})


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL (None for another database or an in-memory SQLite)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def check_database_url(url: str) -> None:
    """A database URL that cannot work is bad configuration (exit 2), not a traceback or an
    unreachable database: a URL that does not parse, a driver SQLAlchemy does not have, a
    database other than SQLite and PostgreSQL (the ledger runs on those two), a driver that is
    not installed, a port outside 1-65535, a SQLite file in a directory that does not exist."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)       # a password stays hidden
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(f"database.url = {shown!r}: no database driver of that name "
                          f"(sqlite:///FILE or postgresql://USER@HOST/DB)") from None
    except (ArgumentError, ValueError):         # ValueError: a port that is not a number
        raise ConfigError(f"database.url = {shown!r}: not a database URL (sqlite:///FILE or "
                          f"postgresql://USER@HOST/DB)") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"database.url = {shown!r}: {backend} is not supported: the ledger "
                          f"runs on SQLite or PostgreSQL (sqlite:///FILE or "
                          f"postgresql://USER@HOST/DB)")
    if parsed.drivername == "postgresql":       # as make_engine opens it
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError:
        raise ConfigError(f"database.url = {shown!r}: its driver "
                          f"{parsed.get_driver_name()!r} is not installed") from None
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise ConfigError(f"database.url = {shown!r}: port {parsed.port} is not a TCP port "
                          f"(1-65535)")
    path = sqlite_file(parsed)
    if path is not None and not path.absolute().parent.is_dir():
        raise ConfigError(f"database.url = {url!r}: directory {path.absolute().parent} does "
                          f"not exist")


def cli_actor() -> str:
    """``cli:<OS user>`` (the login name; the numeric uid when the system has no name for it)."""
    import getpass
    import os

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"cli:{user}"


@dataclass
class AppContext:
    config_path: str | None = None
    database_url: str | None = None
    verbosity: int = 0
    log_format: str = "text"
    wide: bool = False
    settings: Settings = field(init=False, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from jobs.logs import configure

        configure(self.log_format, self.verbosity)
        settings = load_settings(self.config_path)
        if self.database_url:
            settings = replace(settings, database_url=self.database_url)
        check_database_url(settings.database_url)
        self.settings = settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from jobs.migrate import current, head, known, upgrade

            ctx = click.get_current_context(silent=True)
            command = " ".join(ctx.command_path.split()[1:]) if ctx is not None else ""
            may_upgrade = command in UPGRADING and (
                command not in AUTO_UPGRADE_ONLY or self.settings.auto_upgrade)
            url = make_url(self.settings.database_url)
            missing = sqlite_file(url)
            if missing is not None and not missing.exists() and not may_upgrade:
                raise ConfigError(f"database: {missing} does not exist (run `ledgerbridge "
                                  f"db upgrade` to create it, or point --database-url or "
                                  f"[database] url at the ledger)")
            engine = make_engine(self.settings.database_url)
            if may_upgrade:
                upgrade(engine)
            else:
                found, newest = current(engine), head()
                if found != newest:
                    engine.dispose()
                    raise ConfigError(
                        f"database: schema is at {found or 'nothing (an empty database)'}, "
                        f"this version needs {newest}: run `ledgerbridge db upgrade`"
                        if found is None or known(found) else
                        f"database: schema {found} is newer than this version knows "
                        f"(newest {newest}): upgrade ledgerbridge")
            self._engine = engine
        return self._engine

    @property
    def actor(self) -> str:
        """Who the audit trail records this command's changes as: ``cli:<OS user>``."""
        return cli_actor()

    def uow(self, *, read_only: bool = False) -> UnitOfWork:
        """A unit of work with the ledger's commit hooks (credit control re-evaluates holds),
        its changes recorded in the audit trail as made by :attr:`actor`."""
        from billing_core.service import ledger_uow

        return ledger_uow(self.engine, read_only=read_only, policy=self.settings.credit,
                          actor=self.actor)

    def write(self, fn: Callable[[UnitOfWork], T]) -> T:
        """Run ``fn`` in a unit of work with the ledger's hooks and commit: what every writing
        command does (all of it or nothing)."""
        with self.uow() as uow:
            result = fn(uow)
            uow.commit()
            return result

    def read(self, fn: Callable[[UnitOfWork], T]) -> T:
        """Run ``fn`` in a read-only unit of work."""
        with self.uow(read_only=True) as uow:
            return fn(uow)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


pass_app = click.make_pass_decorator(AppContext)

#: A ledger id on the command line (a row's id: 1 to 2^63 - 1); a number no table can hold is a
#: usage error naming the argument and the value, not a database error.
ID = click.IntRange(1, MAX_ID)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: to_jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


def emit(rows: Iterable[dict[str, Any]] | dict[str, Any], columns: Sequence[str] | None = None,
         *, as_json: bool, title: str | None = None,
         fmt: dict[str, Callable[[Any], str]] | None = None) -> None:
    """Print rows as a table (people) or JSON (scripts). A single dict prints as key/value.
    Tables wrap or, with ``--wide``, keep rows on one line; text is escaped and money shown
    in major units (``jobs.cli.render``); JSON keeps minor units and the currency."""
    if as_json:
        click.echo(json.dumps(to_jsonable(rows if isinstance(rows, dict) else list(rows)),
                              indent=2))
        return
    from jobs.cli import render

    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(AppContext) if ctx is not None else None
    out, wide = render.console(bool(app and app.wide))
    if isinstance(rows, dict):
        out.print(render.key_value_table(rows, title=title, wide=wide, fmt=fmt or {}))
        return
    rows = list(rows)
    out.print(render.rows_table(rows, list(columns or (rows[0].keys() if rows else [])),
                                title=title, wide=wide, fmt=fmt or {}))
    if not rows:
        click.echo("(none)")
