"""Billing contacts on the ledger (issue 16, item 3): finance sets them (CLI and service), the
CRM's mapped value updates them, an unmapped CRM value keeps finance's, both databases."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from billing_core.domain.errors import ValidationError
from billing_core.service import ledger_uow
from billing_core.service.accounts import (
    AccountIn,
    create_account,
    get_account,
    update_account,
    update_terms,
)
from jobs.cli import main


def test_finance_and_crm_set_the_billing_email(engine: Engine) -> None:
    with ledger_uow(engine) as uow:
        acc = create_account(uow, AccountIn("Acme", "USD", "A1"))
        assert get_account(uow.conn, acc)["billing_email"] is None
        assert update_terms(uow, acc, billing_email="ap@acme.com; cfo@acme.com") == \
            {"billing_email": "ap@acme.com, cfo@acme.com"}
        # a CRM update without the field keeps finance's addresses
        update_account(uow, acc, AccountIn("Acme Inc", "USD", "A1"))
        assert get_account(uow.conn, acc)["billing_email"] == "ap@acme.com, cfo@acme.com"
        update_account(uow, acc, AccountIn("Acme Inc", "USD", "A1", billing_email="x@acme.com"))
        assert get_account(uow.conn, acc)["billing_email"] == "x@acme.com"
        with pytest.raises(ValidationError, match="billing_email='nope'"):
            update_terms(uow, acc, billing_email="nope")
        update_terms(uow, acc, billing_email="")
        assert get_account(uow.conn, acc)["billing_email"] is None
        uow.commit()


def test_accounts_update_billing_email_cli(sqlite_engine: Engine) -> None:
    url = str(sqlite_engine.url)

    def cli(*args: str):  # noqa: ANN202
        return CliRunner().invoke(main, ["--database-url", url, *args], catch_exceptions=False)

    assert cli("accounts", "add", "--name", "Acme", "--currency", "USD", "--ext-id",
               "A1").exit_code == 0
    res = cli("accounts", "update", "A1", "--billing-email", "ap@acme.com,cfo@acme.com", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["changed"] == {"billing_email": "ap@acme.com, cfo@acme.com"}
    bad = cli("accounts", "update", "A1", "--billing-email", "ap@")
    assert bad.exit_code == 2
    assert "billing_email='ap@'" in bad.stderr
