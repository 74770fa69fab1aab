"""The list of command groups. A new group is one import and one entry in ``COMMANDS``.

Rule kept here: one registration per command name. click's ``add_command`` silently replaces
a command of the same name, so ``register`` refuses a second one (a ``RuntimeError`` at start-up
naming the command) instead of letting the later one win.
"""
from __future__ import annotations

from collections.abc import Iterable

import click

from jobs.cli import (
    audit,
    billing,
    credit,
    demo,
    demo_crm,
    doctor,
    documents,
    dunning,
    email,
    events,
    orders,
    products,  # noqa: F401  (adds show / update to billing's products group)
    receivables,
    reconcile,
    setup,
    sweep,
    sync,
    tokens,
    usage,  # noqa: F401  (adds ingest / metrics to billing's usage group)
)
from jobs.cli.db import db

COMMANDS: list[click.Command] = [
    db,
    *billing.COMMANDS,
    *orders.COMMANDS,
    *receivables.COMMANDS,
    *credit.COMMANDS,
    *setup.COMMANDS,
    *tokens.COMMANDS,
    *sync.COMMANDS,
    *doctor.COMMANDS,
    *demo.COMMANDS,
    *demo_crm.COMMANDS,
    *documents.COMMANDS,
    *email.COMMANDS,
    *events.COMMANDS,
    *sweep.COMMANDS,
    *dunning.COMMANDS,
    *audit.COMMANDS,
    *reconcile.COMMANDS,
]


def register(main: click.Group, commands: Iterable[click.Command] = COMMANDS) -> None:
    for command in commands:
        name = str(command.name)
        if name in main.commands:
            raise RuntimeError(f"the command {name!r} is registered twice "
                               f"({command.callback} and {main.commands[name].callback})")
        main.add_command(command, name)
