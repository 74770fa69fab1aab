"""Bounded admission of ``POST /sync:run`` (issue 13, item 7): 100 concurrent requests against
the real worker, served over a loopback socket, while a run of the same connection holds its
lock. Regression: every queued run held a pooled connection while it waited for the job lock,
so a burst exhausted the pool; requests answered 500 after 30 s, ``GET /billing/invoices``
failed and the daemon's other jobs could not get a connection. Both databases.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import eventually
from sqlalchemy import Engine, func, select

from billing_core.service import ledger_uow
from config.settings import Settings, load_settings
from connectors.base import Budget, Page, WriteResult
from jobs.api.app import ServerHandle, build_app, serve_in_thread
from jobs.api.auth import create_token
from jobs.worker import Worker
from sync.tables import sync_runs

WAIT = 60.0   # a bound on background work on a loaded machine, not a target


def _eventually(what: str, probe: Callable[[], Any]) -> Any:
    return eventually(what, probe, wait=WAIT, every=0.05)


class SlowCRM:
    """A CRM with nothing to read whose reads wait for ``gate``: a run in progress holds its
    connection's lock as long as the test wants."""

    name = "sf"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.reading = threading.Event()
        self.reads: list[str] = []

    def objects(self) -> Sequence[str]:
        return ["account"]

    def accepted_quote_states(self) -> frozenset[str]:
        return frozenset({"Accepted"})

    def api_budget(self) -> Budget:
        return Budget(calls=len(self.reads))

    def check(self) -> list[Any]:
        return []

    def read_changes(self, obj: str, cursor: str | None, *, run_started: datetime | None = None,
                     sweep: Any = None) -> Iterator[Page]:
        self.reads.append(obj)
        self.reading.set()
        assert self.gate.wait(WAIT), "the test never let the read finish"
        yield Page([], [], cursor or "1")

    def read_one(self, obj: str, crm_id: str) -> dict[str, Any] | None:
        return None

    def lookup(self, obj: str, field: str, value: Any) -> list[dict[str, Any]]:
        return []

    def write(self, obj: str, updates: Sequence[dict[str, Any]], *,
              redecide: Any = None) -> list[WriteResult]:
        return [WriteResult(str(u.get("crm_id")), True) for u in updates]


def _settings(tmp_path: Path) -> Settings:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[connections.sf]\ncrm = "salesforce"\nurl = "https://x.example"\n'
                   '[connections.sf.credentials]\nclient_id = "id"\n'
                   'client_secret = "env:NOPE"\n')
    return load_settings(cfg)


class Served:
    def __init__(self, engine: Engine, tmp_path: Path) -> None:
        self.engine = engine
        self.crm = SlowCRM()
        settings = _settings(tmp_path)
        self.worker = Worker(engine, settings, connector_factory=lambda s: self.crm)
        with ledger_uow(engine) as uow:
            token = create_token(uow, "admission", ["admin", "billing:read"])[1]
            uow.commit()
        self.server: ServerHandle = serve_in_thread(
            build_app(engine, settings, sync_runner=self.worker), "127.0.0.1", 0)
        port = self.server.server.servers[0].sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"}

    def post(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.base}/sync:run", json=body, headers=self.headers, timeout=WAIT)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", headers=self.headers, timeout=WAIT)

    def outcomes(self) -> list[str]:
        with self.engine.connect() as conn:
            return [str(o) for o in conn.execute(
                select(sync_runs.c.outcome).order_by(sync_runs.c.id)).scalars()]

    def close(self) -> None:
        self.crm.gate.set()
        _eventually("every run finished", lambda: "running" not in self.outcomes())
        self.server.stop()
        self.worker.close()


@pytest.fixture
def served(engine: Engine, tmp_path: Path) -> Iterator[Served]:
    s = Served(engine, tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_a_burst_of_resyncs_queues_one_run_and_the_rest_of_the_api_answers(
        served: Served) -> None:
    first = served.post({"connection": "sf"})
    assert first.status_code == 202
    assert served.crm.reading.wait(WAIT)          # run 1 holds crm:sf and reads

    with ThreadPoolExecutor(max_workers=100) as pool:
        burst = list(pool.map(lambda _: served.post({"connection": "sf"}), range(100)))
        # While all of that is admitted, nothing else starves.
        invoices = served.get("/billing/invoices")
        health = served.get("/healthz")
        holds = served.worker.reevaluate_holds()  # a daemon job needing its own connection

    assert [r.status_code for r in burst] == [202] * 100
    queued = {r.json()["run_id"] for r in burst}
    assert len(queued) == 1 and queued != {first.json()["run_id"]}
    assert invoices.status_code == 200 and health.status_code == 200
    assert holds is not None
    # The running run holds at most one connection (its lock); the queued one waits holding none.
    assert served.engine.pool.checkedout() <= 1   # type: ignore[attr-defined]
    assert served.outcomes() == ["running", "running"]

    served.crm.gate.set()
    _eventually("both runs finished", lambda: "running" not in served.outcomes())
    assert served.outcomes() == ["ok", "ok"]
    assert served.crm.reads == ["account", "account"]   # one running + one queued, no more
    run = served.get(f"/sync/runs/{queued.pop()}")
    assert run.status_code == 200 and run.json()["outcome"] == "ok"


def test_a_new_request_after_the_queued_run_started_queues_again(served: Served) -> None:
    assert served.post({"connection": "sf"}).status_code == 202
    assert served.crm.reading.wait(WAIT)
    served.crm.gate.set()
    _eventually("the run finished", lambda: served.outcomes() == ["ok"])
    served.crm.gate.clear()
    again = served.post({"connection": "sf"})
    assert again.status_code == 202
    assert again.json()["run_id"] != 1
    served.crm.gate.set()
    _eventually("the second run finished", lambda: served.outcomes() == ["ok", "ok"])


def test_too_many_scopes_queued_answer_429_with_retry_after(served: Served) -> None:
    assert served.post({"connection": "sf"}).status_code == 202
    assert served.crm.reading.wait(WAIT)
    scopes = [{"connection": "sf"}, {"connection": "sf", "object": "account"},
              {"connection": "sf", "full": True}, {"connection": "sf", "account": "A1"}]
    answers = [served.post(body) for body in scopes]
    assert [a.status_code for a in answers] == [202] * 4
    assert len({a.json()["run_id"] for a in answers}) == 4
    refused = served.post({"connection": "sf", "object": "product"})
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "sync_busy"
    # The same scope as a queued run is still answered with that run.
    again = served.post({"connection": "sf", "full": True})
    assert again.status_code == 202 and again.json()["run_id"] == answers[2].json()["run_id"]
    with served.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_runs)).scalar_one() == 5


READ_ENDPOINTS = ("/healthz", "/readyz", "/status", "/metrics", "/billing/invoices",
                  "/billing/payments", "/billing/credit-memos",
                  "/billing/debit-memos", "/provisioning", "/sync/runs/1")


def test_every_other_endpoint_and_job_answers_during_100_concurrent_resyncs(
        served: Served) -> None:
    """The other endpoints are asked while the 100 requests are in flight, not after them,
    and the daemon's other jobs (each needing its own connection) run meanwhile."""
    assert served.post({"connection": "sf"}).status_code == 202
    assert served.crm.reading.wait(WAIT)

    with ThreadPoolExecutor(max_workers=100 + len(READ_ENDPOINTS)) as pool:
        burst = [pool.submit(served.post, {"connection": "sf"}) for _ in range(100)]
        others = {path: pool.submit(served.get, path) for path in READ_ENDPOINTS}
        jobs = {"holds": served.worker.reevaluate_holds(), "bill run": served.worker.bill_run(),
                "dispatch": served.worker.dispatch()}
        answers = {path: (f.result().status_code, f.result().text[:200])
                   for path, f in others.items()}
        statuses = [f.result().status_code for f in burst]

    assert statuses == [202] * 100
    assert {path: code for path, (code, _) in answers.items() if code != 200} == {}, answers
    assert {name: result for name, result in jobs.items() if result is None} == {}
    assert served.outcomes() == ["running", "running"]     # one running, one queued: no more
