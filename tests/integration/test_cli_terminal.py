"""Terminal output of the CLI (issue 15, item 8): CRM text escaped, values whole (wrapped on a
terminal, one line with --wide or in a pipe), money in major units with its currency (JSON in
minor units), and the bill run's progress bar with its total and time remaining.

Regressions: an account name from the CRM holding terminal escapes reached the terminal raw
(``\\x1b[2J`` cleared the screen; ``[bold]`` was read as rich markup and vanished); tables cut
values at 80 columns with "…"; the bill run's progress showed no total or ETA."""
from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from billing_core.adapters.db import UnitOfWork, make_engine
from billing_core.service.accounts import AccountIn, create_account
from jobs.cli import main

NAME = "Acme\x1b[2J\x00 [bold]Holdings[/bold] " + "Long" * 30 + " END"


@pytest.fixture
def url(tmp_path: Path, sqlite_template: Path) -> str:
    shutil.copy(sqlite_template, tmp_path / "t.db")
    url = f"sqlite:///{tmp_path / 't.db'}"
    engine = make_engine(url)
    with UnitOfWork(engine) as uow:
        for i in range(3):
            create_account(uow, AccountIn(name=NAME if i == 0 else f"Account {i}",
                                          currency="USD", ext_id=f"001CRM{i}",
                                          credit_limit="1234.50"))
        uow.commit()
    engine.dispose()
    return url


def _cli(url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, ["--database-url", url, *args])


def test_crm_text_is_escaped_and_shown_whole(url: str) -> None:
    result = _cli(url, "accounts", "list")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x00" not in result.stdout
    assert "Acme\\x1b[2J\\x00 [bold]Holdings[/bold]" in result.stdout
    assert "…" not in result.stdout
    (line,) = [ln for ln in result.stdout.splitlines() if "END" in ln]   # piped: one line
    assert "Long" * 30 in line


def test_on_a_terminal_cells_wrap_and_wide_keeps_rows_whole(url: str) -> None:
    term = {"FORCE_COLOR": "1", "COLUMNS": "70", "NO_COLOR": "1", "TERM": "xterm"}
    wrapped = _cli(url, "accounts", "list", env=term)
    plain = _strip(wrapped.stdout)
    assert "…" not in plain and "END" in plain
    assert max(len(ln) for ln in plain.splitlines()) <= 70
    wide = _strip(_cli(url, "--wide", "accounts", "list", env=term).stdout)
    assert any("Long" * 30 + " END" in ln for ln in wide.splitlines())


def _strip(text: str) -> str:
    import re
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_money_in_major_units_with_currency_for_people_and_minor_in_json(url: str) -> None:
    shown = _cli(url, "holds", "show", "001CRM1")
    assert shown.exit_code == 0, shown.output
    assert "1234.50 USD" in shown.stdout
    data = json.loads(_cli(url, "holds", "show", "001CRM1", "--json").stdout)
    assert data["credit_limit_minor"] == 123450 and data["currency"] == "USD"


def test_the_bill_run_shows_a_bar_with_its_total_and_eta(url: str, tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ledgerbridge"),
                             "--database-url", url, "bill-run", "--date", "2026-12-01"],
                            stdout=subprocess.PIPE, stderr=secondary, env=env, cwd=tmp_path)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=120)
    os.close(primary)
    terminal = _strip(b"".join(chunks).decode(errors="replace"))
    assert proc.returncode == 0, terminal + out.decode()
    assert "billing accounts" in terminal and "/3" in terminal and "eta" in terminal
