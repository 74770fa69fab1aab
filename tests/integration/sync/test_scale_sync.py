"""Results identical with 1 or 3 worker processes (issue 18): ``bench/scale_sync.py`` runs
real ``Worker`` processes on PostgreSQL over a 4-connection sync of the sandbox CRM and a
provisioning backlog. One worker, then three of which one is killed (SIGKILL) after its first
sync page: the same ledger (orders, provisioning requests and their states, quarantine),
every connection synced once to the end, no request handed to two workers."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import scale_sync  # noqa: E402


@pytest.mark.postgres
def test_one_worker_and_three_with_one_killed_leave_the_same_ledger(
        pg_schema_url: str) -> None:       # the fixture: PostgreSQL is there (else fail on CI)
    url = os.environ.get("LEDGERBRIDGE_TEST_PG_URL", scale_sync.DEFAULT_URL)
    with scale_sync.sandbox(200, 200) as sbx:
        one = scale_sync.run(1, accounts=200, quotes=200, queued=60, database_url=url,
                             sbx=sbx)
        three = scale_sync.run(3, accounts=200, quotes=200, queued=60, database_url=url,
                               sbx=sbx, kill_one=True)
    for result in (one, three):
        assert result["rows_claimed_twice"] == 0
        assert result["syncs_per_connection"] == {c: 1 for c in scale_sync.CONNECTIONS}
        assert result["sync_outcomes"] == ["ok"]
        assert result["requests"].get("dispatching", 0) == 0
    assert one["dispatched"] >= 60 and one["orders"] > 0
    assert three["killed"] == 1 and three["abandoned_runs"] == 1
    assert three["detail"] == one["detail"]
