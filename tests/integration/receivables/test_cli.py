"""The receivables commands through click's CliRunner (SQLite file database)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from receivables_helpers import make_account, post_invoice

from billing_core.adapters.db import UnitOfWork, make_engine
from jobs.cli import main


@pytest.fixture
def cli(tmp_path: Path, sqlite_template: Path):
    shutil.copy(sqlite_template, tmp_path / "cli.db")
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = make_engine(url)
    with UnitOfWork(engine) as uow:
        account = make_account(uow, "001CRM")
        post_invoice(uow, account, 10000)
        uow.commit()
    engine.dispose()
    runner = CliRunner(env={"COLUMNS": "250"})

    def run(*args: str, code: int = 0):
        result = runner.invoke(main, ["--database-url", url, *args])
        assert result.exit_code == code, (result.output, result.stderr)
        return result
    return run


def _json(result):
    return json.loads(result.stdout)


def test_memo_flow(cli):
    memo = _json(cli("credit-memos", "create", "001CRM", "25.00", "--reason", "goodwill",
                     "--json"))
    assert memo["status"] == "draft"
    assert _json(cli("credit-memos", "activate", str(memo["id"]), "--json"))["number"] == \
        "CM-000001"
    view = _json(cli("credit-memos", "apply", "CM-000001", "--to", "TINV-000001=10", "--json"))
    assert (view["status"], view["balance_minor"]) == ("partially_applied", 1500)
    assert "partially_applied" in cli("credit-memos", "list", "--account", "001CRM").stdout
    assert "TINV" not in cli("credit-memos", "show", "CM-000001").stdout
    assert _json(cli("credit-memos", "unapply", "CM-000001", "--json"))["status"] == "active"
    assert _json(cli("credit-memos", "cancel", "CM-000001", "--json"))["status"] == "cancelled"
    dm = _json(cli("debit-memos", "create", "1", "5", "--reason", "fee", "--json"))
    assert _json(cli("debit-memos", "activate", str(dm["id"]), "--json"))["number"] == "DM-000001"
    assert "DM-000001" in cli("debit-memos", "list").stdout
    assert _json(cli("debit-memos", "cancel", "DM-000001", "--json"))["status"] == "cancelled"


def test_payments_credits_void_and_ar(cli):
    pay = _json(cli("payments", "record", "001CRM", "30", "--reference", "WIRE-9",
                    "--received-on", "2026-03-05", "--apply-oldest", "--json"))
    assert pay["applied_minor"] == 3000
    assert "WIRE-9" in cli("payments", "list").stdout
    grant = _json(cli("credits", "grant", "001CRM", "20", "--kind", "granted", "--reason",
                      "referral", "--json"))
    memo = _json(cli("credits", "convert", str(grant["id"]), "--amount", "5", "--json"))
    assert (memo["origin"], memo["amount_minor"]) == ("credit_conversion", 500)
    back = _json(cli("credits", "convert", "--from-memo", memo["number"], "--json"))
    assert (back["kind"], back["amount_minor"]) == ("memo_return", 500)
    assert "memo_return" in cli("credits", "list", "001CRM").stdout
    aging = _json(cli("ar", "aging", "--as-of", "2026-05-01", "--json"))
    assert [(r["account_id"], r["d31_60_minor"]) for r in aging] == [(1, 7000), (None, 7000)]
    assert "TOTAL" in cli("ar", "aging", "--as-of", "2026-05-01").stdout
    balance = _json(cli("ar", "balance", "001CRM", "--as-of", "2026-05-01", "--json"))
    assert (balance["open_balance_minor"], balance["oldest_overdue_days"]) == (7000, 31)
    cli("payments", "apply", "WIRE-9", "--json")      # nothing left: stays as it is
    assert _json(cli("payments", "unapply", "WIRE-9", "--json"))["balance_minor"] == 3000
    assert _json(cli("payments", "apply", "WIRE-9", "--to", "TINV-000001=30",
                     "--json"))["balance_minor"] == 0
    result = cli("void-invoice", "TINV-000001", code=2)
    assert result.stderr.count("\n") == 1 and "invalid_state" in result.stderr


BAD_INPUT = [
    (["credit-memos", "create", "001CRM", "abc", "--reason", "r"], "invalid_amount"),
    (["credit-memos", "create", "001CRM", "1.001", "--reason", "r"], "invalid_amount"),
    (["credit-memos", "create", "NOPE", "1", "--reason", "r"], "not_found"),
    (["credit-memos", "create", "001CRM", "1", "--reason", "r", "--currency", "EUR"],
     "currency_mismatch"),
    (["credit-memos", "apply", "CM-1", "--to", "TINV-000001"], "invalid_input"),
    (["payments", "record", "001CRM", "1", "--reference", "R", "--currency", "XYZ"],
     "unknown_currency"),
    (["ar", "aging", "--as-of", "May 1st"], "invalid_input"),
    (["credits", "convert"], "invalid_input"),
    (["void-invoice", "INV-404"], "not_found"),
]


def test_bad_input_is_one_line_and_exit_2(cli):
    for args, expected in BAD_INPUT:
        result = cli(*args, code=2)
        assert result.stderr.count("\n") == 1, args
        assert result.stderr.startswith(f"error: {expected}:"), (args, result.stderr)


def test_duplicate_reference_and_partial_batches(cli):
    cli("payments", "record", "001CRM", "1", "--reference", "R1")
    assert "reference='R1'" in cli("payments", "record", "001CRM", "1", "--reference", "R1",
                                   code=2).stderr
    cli("credit-memos", "create", "001CRM", "1", "--reason", "r")
    # memo 1 activated, 99 refused: done, something needs a look (exit 1, not 2)
    result = cli("credit-memos", "activate", "1", "99", "--json", code=1)
    assert [r["ok"] for r in json.loads(result.stdout)] == [True, False]
    assert "does not exist" in result.stderr
