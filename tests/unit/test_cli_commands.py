"""One registration per command name.

Regression: ``demo`` was registered twice (the billing demo, then the CRM demo); click's
``add_command`` silently replaced the first, so which demo ran depended on list order.
"""
from __future__ import annotations

from collections import Counter

import click
import pytest

from jobs.cli import main
from jobs.cli.commands import COMMANDS, register
from jobs.cli.demo_crm import demo_command


def test_no_command_name_is_registered_twice() -> None:
    names = Counter(command.name for command in COMMANDS)
    assert [name for name, n in names.items() if n > 1] == []
    assert sorted(main.commands) == sorted(names)


def test_register_refuses_a_second_command_of_the_same_name() -> None:
    group = click.Group("g")
    first, second = click.Command("demo"), click.Command("demo")
    with pytest.raises(RuntimeError, match="'demo' is registered twice"):
        register(group, [first, second])
    assert group.commands["demo"] is first


def test_demo_is_the_crm_demo_and_the_ledger_demo_is_billing_demo() -> None:
    assert main.commands["demo"] is demo_command
    assert main.commands["billing-demo"].help is not None
    assert "bill run" in main.commands["billing-demo"].help
