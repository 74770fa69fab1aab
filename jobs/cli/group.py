"""The ``ledgerbridge`` group itself: the exit-code contract for whatever a command raises, and
commands registered on first use.

Kept light on purpose (click only at import): ``ledgerbridge --version`` answers from the
package metadata before any command module, the database layer or the API is imported.
Everything a command needs is imported when it runs.
"""
from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any, NoReturn

import click
from click.exceptions import NoArgsIsHelpError


class LedgerGroup(click.Group):
    """Turns what a command raises into the exit-code contract (``jobs.cli.exits``): one line
    on stderr, then 2 (bad input, configuration, a usage error), 3 (the database unreachable),
    130 (Ctrl-C)."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except NoArgsIsHelpError:
            raise
        except click.UsageError as exc:     # the group's own options (--log-format, --config)
            _usage_line(exc)

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy import make_url
        from sqlalchemy.exc import InterfaceError, OperationalError

        from billing_core.domain.errors import LedgerError
        from config.settings import ConfigError
        from jobs.cli import exits
        from jobs.cli.common import AppContext
        from jobs.cli.render import safe

        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except click.UsageError as exc:     # a command's options and arguments
            _usage_line(exc)
        except LedgerError as exc:      # its value may come from the CRM or a file: escaped
            click.echo(f"error: {exc.code}: {safe(str(exc))}", err=True)
            sys.exit(exits.BAD_INPUT)
        except ConfigError as exc:
            click.echo(f"error: config: {safe(str(exc))}", err=True)
            sys.exit(exits.BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(exits.INTERRUPTED)
        except (OperationalError, InterfaceError) as exc:
            busy = _busy(exc)
            if not exc.connection_invalidated and not _connect_failure(exc) and not busy:
                raise
            app = ctx.find_object(AppContext)
            where = make_url(app.settings.database_url).render_as_string(hide_password=True) \
                if app is not None else "the database"
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            if busy:
                click.echo(f"error: database: {where} is busy: {reason} (another process "
                           "held the lock past the wait; nothing was written): retry", err=True)
            else:
                click.echo(f"error: database: cannot reach {where}: {reason}", err=True)
            sys.exit(exits.UNREACHABLE)


def _usage_line(exc: click.UsageError) -> NoReturn:
    """A usage error as the contract's one line (click's own is three: usage, hint, error),
    naming the option and the value, with where to read more; exit 2."""
    from jobs.cli import exits
    from jobs.cli.render import safe

    where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
    click.echo(f"error: {safe(exc.format_message())}{where}", err=True)
    sys.exit(exits.BAD_INPUT)


def _busy(exc: Any) -> bool:
    """Whether a driver error says another transaction kept what this one needed (SQLite's
    write lock past the busy timeout, a PostgreSQL deadlock or lock timeout): rolled back,
    nothing written, worth a retry."""
    text = str(exc.orig).lower()
    return any(s in text for s in ("database is locked", "database table is locked",
                                   "deadlock detected", "lock timeout"))


def _connect_failure(exc: Any) -> bool:
    """Whether a driver error says the database could not be reached (not a bad statement)."""
    text = str(exc.orig).lower()
    return any(s in text for s in ("connection refused", "could not connect", "timeout",
                                   "timed out", "could not translate host name",
                                   "server closed the connection", "unable to open database",
                                   "connection failed"))


class MainGroup(LedgerGroup):
    """``ledgerbridge``: its commands (``jobs.cli.commands``) are registered the first time
    anything looks at them (running one, ``--help``, ``main.commands``), not at import."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._registered = False
        super().__init__(*args, **kwargs)

    @property
    def commands(self) -> MutableMapping[str, click.Command]:
        if not self._registered:
            self._registered = True
            from jobs.cli.commands import register

            register(self)
        return self._commands

    @commands.setter
    def commands(self, value: MutableMapping[str, click.Command]) -> None:
        self._commands = value
