"""The database goes away in the middle of a sync run and comes back (PostgreSQL through a
TCP forwarder the test cuts and restores; the server itself is never touched): the run that
could not record its end is recorded by the next run of its connection in the same process,
not left ``running`` (which ``status`` reports as abandoned, exit 1, for as long as the
daemon lives: only a run whose process is gone was ever closed)."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fake_crm import FakeCRM
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from tcp_forwarder import Forwarder

from billing_core.adapters.db import make_engine
from sync.engine import run_cycle
from sync.status import overview
from sync.tables import sync_runs

pytestmark = pytest.mark.postgres


class _DropsTheDatabase(FakeCRM):
    """Cuts the database when the prices are read: the page's apply and the run's end fail."""

    def __init__(self, forwarder: Forwarder) -> None:
        super().__init__()
        self.forwarder = forwarder

    def read_changes(self, obj: str, cursor: str | None, **kw: Any) -> Iterator[Any]:
        if obj == "price":
            self.forwarder.stop()
        yield from super().read_changes(obj, cursor, **kw)


@pytest.fixture
def forwarded(pg_engine: Engine, pg_schema_url: str) -> Iterator[tuple[Engine, Forwarder]]:
    url = pg_engine.url
    fwd = Forwarder(int(url.port or 5432), str(url.host or "127.0.0.1"))
    fwd.start()
    engine = make_engine(
        url.set(port=fwd.port).render_as_string(hide_password=False),
        connect_args={"options": f"-csearch_path={pg_schema_url}", "connect_timeout": 5})
    try:
        yield engine, fwd
    finally:
        engine.dispose()
        fwd.stop()


def test_a_run_whose_end_the_database_missed_is_closed_when_it_comes_back(
        forwarded: tuple[Engine, Forwarder], pg_engine: Engine) -> None:
    engine, fwd = forwarded
    crm = _DropsTheDatabase(fwd)
    crm.seed_basic()
    with pytest.raises(SQLAlchemyError):
        run_cycle(engine, crm)
    fwd.start()                                             # the database is back
    plain = FakeCRM()
    plain.seed_basic()
    assert run_cycle(engine, plain).outcome == "ok"
    with pg_engine.connect() as conn:
        runs = {r.id: (r.outcome, r.finished_at, r.error) for r in conn.execute(
            select(sync_runs.c.id, sync_runs.c.outcome, sync_runs.c.finished_at,
                   sync_runs.c.error).order_by(sync_runs.c.id))}
    first = runs[min(runs)]
    assert first[0] == "failed", runs
    assert first[1] is not None and "OperationalError" in str(first[2]), runs
    assert not any(outcome == "running" for outcome, _, _ in runs.values()), runs
    later = datetime.now(UTC) + timedelta(hours=1)    # past three intervals
    assert overview(pg_engine, interval_minutes=15, now=later)["abandoned_runs"] == 0
