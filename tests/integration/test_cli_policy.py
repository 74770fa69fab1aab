"""The CLI applies the credit policy from the user's config file, not the built-in defaults.

Regression: the billing and receivables commands opened their unit of work with the default
policy, so a configured ``limit_threshold`` (or grace days) was ignored when they committed.
"""
from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy import select

from billing_core.adapters.db import UnitOfWork, make_engine
from billing_core.adapters.tables import hold_reasons
from billing_core.service.accounts import AccountIn, create_account
from jobs.cli import main


def test_debit_memo_from_the_cli_holds_at_the_configured_threshold(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = tmp_path / "ledgerbridge.toml"
    config.write_text('[credit]\nlimit_threshold = "0.5"\ninclude_unbilled_orders = false\n')
    runner = CliRunner()
    assert runner.invoke(main, ["--database-url", url, "db", "upgrade"]).exit_code == 0
    engine = make_engine(url)
    with UnitOfWork(engine) as uow:
        create_account(uow, AccountIn(name="Acme", currency="USD", ext_id="ACME",
                                      credit_limit="1000.00"))
        uow.commit()

    base = ["--database-url", url, "--config", str(config)]
    created = runner.invoke(main, [*base, "debit-memos", "create", "ACME", "600.00",
                                   "--reason", "late fee", "--json"])
    assert created.exit_code == 0, created.output
    memo = json.loads(created.output)
    activated = runner.invoke(main, [*base, "debit-memos", "activate", str(memo["id"])])
    assert activated.exit_code == 0, activated.output

    # 600 owed > 1000 x 0.5: the configured threshold places the hold (the default would not)
    with engine.connect() as conn:
        reasons = [r.reason for r in conn.execute(select(hold_reasons.c.reason))]
    engine.dispose()
    assert reasons == ["credit_limit"]
