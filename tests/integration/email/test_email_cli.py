"""``ledgerbridge email send | list | retry`` over a SQLite file and a loopback SMTP server
(issue 16, item 3): exit codes 0 all sent, 1 some failed, 2 not enabled, 3 SMTP unreachable;
the dry run lists document, recipients and subject and writes nothing.

Figures: 3 accounts, one invoice of 20.00 USD each (INV-000001..3); account index 2 has no
billing email in the case that needs one failing."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from email_helpers import SELLER, Inbox, billed_ledger, free_port
from sqlalchemy import Engine

from jobs.cli import main


def _config(tmp: Path, port: int, enabled: bool = True) -> str:
    path = tmp / "lb.toml"
    path.write_text(f"""
[documents]
seller_name = "{SELLER}"
[email]
enabled = {'true' if enabled else 'false'}
since = "2027-01-01"
from_address = "billing@northwind.test"
host = "127.0.0.1"
port = {port}
timeout_seconds = 5.0
""")
    return str(path)


def _cli(engine: Engine, config: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", config, "--database-url", str(engine.url),
                                     *args])


def test_dry_run_then_send_then_list(sqlite_engine: Engine, tmp_path: Path,
                                     smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    billed_ledger(sqlite_engine, 3, no_email=(2,))
    config = _config(tmp_path, port)
    dry = _cli(sqlite_engine, config, "email", "send", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    rows = json.loads(dry.stdout)
    assert [(r["document"], r["recipients"], r["subject"]) for r in rows[:2]] == [
        ("INV-000001", "acct-0@example.com, ap-0@example.com",
         f"Invoice INV-000001 from {SELLER}"),
        ("INV-000002", "acct-1@example.com, ap-1@example.com",
         f"Invoice INV-000002 from {SELLER}")]
    assert "has no billing_email" in rows[2]["subject"]
    assert inbox.messages == []
    listed = _cli(sqlite_engine, config, "email", "list", "--json")
    assert json.loads(listed.stdout) == []              # the dry run wrote nothing
    sent = _cli(sqlite_engine, config, "email", "send")
    assert sent.exit_code == 1, sent.output             # one failed: attention
    assert "2 sent" in sent.stdout and "has no billing_email" in sent.stderr
    assert len(inbox.messages) == 2
    failed = json.loads(_cli(sqlite_engine, config, "email", "list", "--state", "failed",
                             "--json").stdout)
    assert len(failed) == 1
    assert _cli(sqlite_engine, config, "accounts", "update", "3", "--billing-email",
                "c@example.com").exit_code == 0
    retried = _cli(sqlite_engine, config, "email", "retry", str(failed[0]["id"]))
    assert retried.exit_code == 0 and "c@example.com" in retried.stdout
    again = _cli(sqlite_engine, config, "email", "send", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["sent"] == 1
    assert len(inbox.messages) == 3


def test_unreachable_smtp_exits_3_and_keeps_them_queued(sqlite_engine: Engine,
                                                        tmp_path: Path) -> None:
    billed_ledger(sqlite_engine, 2)
    config = _config(tmp_path, free_port())
    res = _cli(sqlite_engine, config, "email", "send")
    assert res.exit_code == 3, res.output
    assert "error: smtp_unreachable: 127.0.0.1:" in res.stderr
    queued = json.loads(_cli(sqlite_engine, config, "email", "list", "--state", "queued",
                             "--json").stdout)
    assert len(queued) == 2


def test_disabled_exits_2_and_queues_nothing(sqlite_engine: Engine, tmp_path: Path) -> None:
    billed_ledger(sqlite_engine, 1)
    config = _config(tmp_path, free_port(), enabled=False)
    res = _cli(sqlite_engine, config, "email", "send")
    assert res.exit_code == 2
    assert "email.enabled = false" in res.stderr
    assert json.loads(_cli(sqlite_engine, config, "email", "list", "--json").stdout) == []
    bad = _cli(sqlite_engine, config, "email", "retry", "99")
    assert bad.exit_code == 2 and "99" in bad.stderr
