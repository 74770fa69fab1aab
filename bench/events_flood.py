"""CRM event flood: the receivers' latency while N events of one record arrive, then the
targeted resync's CRM reads.

    .venv/bin/python bench/events_flood.py                       # 10,000 events, SQLite
    .venv/bin/python bench/events_flood.py --events 2000 --clients 4
    .venv/bin/python bench/events_flood.py --database-url postgresql://postgres@127.0.0.1:5432/test

The daemon's HTTP API (uvicorn on loopback, the real app) takes N signed Salesforce JSON
callouts for one account from ``--clients`` concurrent senders (each a process with one
keep-alive session: senders in the receiver's process took its interpreter lock and were
measured with it);
every answer's latency is recorded (the receiver stores and commits before it answers). Then
one ``Worker.process_events`` round with a counting stand-in connector reads the records the
events name. Prints the latency percentiles, the events stored, and the CRM reads (1 expected
for one record). On PostgreSQL the benchmark works in its own schema and drops it.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from billing_core.adapters.db import make_engine  # noqa: E402
from config.settings import parse_settings  # noqa: E402
from connectors.base import Budget  # noqa: E402
from jobs.api.app import build_app, serve_in_thread  # noqa: E402
from jobs.migrate import upgrade  # noqa: E402
from jobs.worker import Worker  # noqa: E402
from sync.tables import event_inbox  # noqa: E402

SECRET = "bench-secret"
ACCOUNT = "001000000000001AAA"


class CountingCRM:
    """A connector that has one account and counts its reads by id."""

    name = "sf"

    def __init__(self) -> None:
        self.reads = 0

    def objects(self) -> Sequence[str]:
        return ("account",)

    def accepted_quote_states(self) -> frozenset[str]:
        return frozenset({"Accepted"})

    def api_budget(self) -> Budget:
        return Budget(calls=self.reads)

    def read_by_ids(self, obj: str, ids: list[str]) -> list[dict[str, Any]]:
        self.reads += 1
        return [{"crm_id": i, "name": "Acme", "currency": "USD", "country": "US",
                 "credit_limit": 1000, "credit_hold": False} for i in ids]

    def read_one(self, obj: str, crm_id: str) -> dict[str, Any] | None:
        return self.read_by_ids(obj, [crm_id])[0]

    def write(self, obj: str, updates: Sequence[dict[str, Any]], **kw: Any) -> list[Any]:
        return []


class Timed:
    """ASGI wrapper: each request's time from its arrival at the app to its answer's last
    byte handed to the server, into ``into`` (what the receiver itself costs, without the
    senders' side)."""

    def __init__(self, app: Any, into: list[float]) -> None:
        self.app, self.into = app, into

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.into.append(time.perf_counter() - started)

        await self.app(scope, receive, timed_send)


def send(target: str, client: int, count: int) -> tuple[list[float], list[int]]:
    """One sender (a process): ``count`` signed callouts on one keep-alive session; each
    answer's latency (seconds) and status."""
    session = requests.Session()
    bodies = []
    for n in range(count):
        raw = json.dumps({"sobject": "Account", "ids": [ACCOUNT], "event": "updated",
                          "event_id": f"c{client}-{n}"}).encode()
        bodies.append((raw, hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()))
    latencies, statuses = [], []
    for raw, sig in bodies:
        started = time.perf_counter()
        resp = session.post(target, data=raw, headers={
            "Content-Type": "application/json", "X-Signature": sig}, timeout=30)
        latencies.append(time.perf_counter() - started)
        statuses.append(resp.status_code)
    return latencies, statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    schema = None
    if args.database_url:
        schema = f"bench_events_{uuid.uuid4().hex[:8]}"
        admin = make_engine(args.database_url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = make_engine(args.database_url,
                             connect_args={"options": f"-csearch_path={schema}"})
        url = args.database_url
    else:
        path = Path(tempfile.mkdtemp()) / "ledger.db"
        url = f"sqlite:///{path}"
        engine = make_engine(url)
    try:
        upgrade(engine)
        os.environ["LB_BENCH_EVENTS_HMAC"] = SECRET
        settings = parse_settings({
            "database": {"url": url},
            "connections": {"sf": {
                "crm": "salesforce", "url": "https://x.example",
                "credentials": {"client_id": "id", "client_secret": "env:NOPE"},
                "events": {"hmac_secret": "env:LB_BENCH_EVENTS_HMAC"}}}})
        inside: list[float] = []
        server = serve_in_thread(Timed(build_app(engine, settings), inside),  # type: ignore[arg-type]
                                 "127.0.0.1", 0)
        port = server.server.servers[0].sockets[0].getsockname()[1]
        target = f"http://127.0.0.1:{port}/events/salesforce/sf/json"
        latencies: list[float] = []
        statuses: list[int] = []
        per_client = args.events // args.clients
        # The senders are other processes (the CRM is another machine): senders in this
        # process would take the interpreter lock from the receiver they measure.
        ctx = multiprocessing.get_context("spawn")
        wall = time.perf_counter()
        with ctx.Pool(args.clients) as pool:
            for got, codes in pool.starmap(send, [(target, c, per_client)
                                                  for c in range(args.clients)]):
                latencies += got
                statuses += codes
        wall = time.perf_counter() - wall
        server.stop()
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(event_inbox)).scalar_one()
        crm = CountingCRM()
        worker = Worker(engine, settings, connector_factory=lambda s: crm)  # type: ignore[arg-type,return-value]
        started = time.perf_counter()
        reports = worker.process_events(wait=True)
        resync = time.perf_counter() - started
        worker.close()
        ms = sorted(x * 1000 for x in latencies)
        served = sorted(x * 1000 for x in inside)

        def pct(p: float, values: list[float] = ms) -> float:
            return values[min(len(values) - 1, int(p / 100 * len(values)))]

        print(f"database: {engine.dialect.name}; {len(ms)} events from {args.clients} clients "
              f"in {wall:.1f} s ({len(ms) / wall:.0f}/s)")
        print(f"answers: {sorted(set(statuses))}; latency ms p50={pct(50):.1f} "
              f"p95={pct(95):.1f} p99={pct(99):.1f} max={ms[-1]:.1f} "
              f"mean={statistics.mean(ms):.1f} (at the senders)")
        print(f"in the receiver (request in -> answer out): p50={pct(50, served):.1f} "
              f"p95={pct(95, served):.1f} p99={pct(99, served):.1f} max={served[-1]:.1f}")
        print(f"load average during the run: {os.getloadavg()[0]:.1f} "
              f"({os.cpu_count()} CPUs)")
        print(f"stored: {stored}; resync: {sum(r.events for r in reports)} events, "
              f"{sum(r.records for r in reports)} record(s), {crm.reads} CRM read(s) "
              f"in {resync:.2f} s")
        return 0 if stored == len(ms) and crm.reads == 1 else 1
    finally:
        engine.dispose()
        if schema:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
