"""The list of command groups. A new group is one import and one line here."""
from __future__ import annotations

import click


def register(main: click.Group) -> None:
    from jobs.cli.db import db

    main.add_command(db)
    for module_name, attr in _OPTIONAL:
        try:
            module = __import__(module_name, fromlist=[attr])
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        command = getattr(module, attr)
        for cmd in command if isinstance(command, (list, tuple)) else [command]:
            main.add_command(cmd)


# (module, attribute): modules that add commands; each attribute is a click command or a list.
_OPTIONAL: list[tuple[str, str]] = [
    ("jobs.cli.billing", "COMMANDS"),
    ("jobs.cli.receivables", "COMMANDS"),
    ("jobs.cli.credit", "COMMANDS"),
    ("connectors.sandbox.cli", "sandbox_command"),
    ("jobs.cli.tokens", "COMMANDS"),
    ("jobs.cli.sync", "COMMANDS"),
    ("jobs.cli.demo_crm", "COMMANDS"),   # `demo`: registered last, so it is the README's demo
]
