"""``bench/sync.py --replay`` measures the sync with reading free: the sync is served the pages
its raw read returned, from memory. The figure means something only if the replayed sync does
the work a live one does, so this runs both against one sandbox CRM, each into a new SQLite
ledger, and compares what they leave: the same accounts, quotes handed off as the same
orders, the same bookkeeping and outbox rows, nothing quarantined. A replay that lost a page
leaves a different ledger (a page served twice does not: the sync takes it as unchanged).
"""
from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench_module import load
from sqlalchemy import create_engine, text

from connectors.sandbox.remote import RemoteSandbox

#: What each ledger must hold alike (counts, and the outbox's payload digests).
QUERIES = {
    "accounts": "SELECT count(*) FROM accounts",
    "orders": "SELECT source_ref, status FROM orders ORDER BY source_ref",
    "subscriptions": "SELECT count(*), coalesce(sum(quantity), 0) FROM subscriptions",
    "records": "SELECT object, count(*) FROM sync_records WHERE deleted_at IS NULL "
               "GROUP BY object ORDER BY object",
    "deleted": "SELECT count(*) FROM sync_records WHERE deleted_at IS NOT NULL",
    "handoffs": "SELECT state, count(*) FROM handoffs GROUP BY state ORDER BY state",
    "outbox": "SELECT object, crm_id, hash, state FROM outbox ORDER BY object, crm_id",
    "quarantine": "SELECT count(*) FROM quarantine",
}


@pytest.fixture
def environ() -> Iterator[None]:
    """The bench puts the sandbox's secrets in the environment: give it back as it was."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _ledger(path: Path) -> dict[str, list[tuple[object, ...]]]:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return {name: [tuple(r) for r in conn.execute(text(sql))]
                    for name, sql in QUERIES.items()}
    finally:
        engine.dispose()


def test_replayed_sync_leaves_the_ledger_a_live_sync_leaves(tmp_path: Path,
                                                            environ: None) -> None:
    bench = load("sync")
    out = io.StringIO()
    with RemoteSandbox(accounts=120, quotes=120, sides=("salesforce",)) as sbx, \
            contextlib.redirect_stdout(out):
        for mode in ("live", "replay"):
            bench._pair(sbx, tmp_path / mode, 120, 120, "in a child process", False,
                        replay=mode == "replay")
    live, replayed = (_ledger(tmp_path / m / "sync" / "bench.db") for m in ("live", "replay"))
    assert live == replayed
    assert live["accounts"][0][0] == 120
    assert live["orders"] and live["handoffs"] and live["outbox"]
    assert live["deleted"] == [(0,)] and live["quarantine"] == [(0,)]
    printed = out.getvalue()
    assert "  replayed : " in printed and "  sync     : " in printed
    assert printed.count("(ok, handed off") == 2
