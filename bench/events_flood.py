"""CRM event flood: the receivers' latency while N events of one record arrive, then the
targeted resync's CRM reads.

    .venv/bin/python bench/events_flood.py                       # 10,000 events, SQLite
    .venv/bin/python bench/events_flood.py --events 2000 --clients 4
    .venv/bin/python bench/events_flood.py --database-url postgresql://postgres@127.0.0.1:5432/test

The daemon's HTTP API (uvicorn on loopback, the real app) takes N signed Salesforce JSON
callouts for one account from ``--clients`` concurrent senders (each a keep-alive session);
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
import os
import statistics
import sys
import tempfile
import threading
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
        server = serve_in_thread(build_app(engine, settings), "127.0.0.1", 0)
        port = server.server.servers[0].sockets[0].getsockname()[1]
        target = f"http://127.0.0.1:{port}/events/salesforce/sf/json"
        latencies: list[float] = []
        statuses: list[int] = []
        lock = threading.Lock()
        per_client = args.events // args.clients

        def send(client: int) -> None:
            session = requests.Session()
            for n in range(per_client):
                raw = json.dumps({"sobject": "Account", "ids": [ACCOUNT], "event": "updated",
                                  "event_id": f"c{client}-{n}"}).encode()
                sig = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
                started = time.perf_counter()
                resp = session.post(target, data=raw, headers={
                    "Content-Type": "application/json", "X-Signature": sig}, timeout=30)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses.append(resp.status_code)

        threads = [threading.Thread(target=send, args=(c,)) for c in range(args.clients)]
        wall = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
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

        def pct(p: float) -> float:
            return ms[min(len(ms) - 1, int(p / 100 * len(ms)))]

        print(f"database: {engine.dialect.name}; {len(ms)} events from {args.clients} clients "
              f"in {wall:.1f} s ({len(ms) / wall:.0f}/s)")
        print(f"answers: {sorted(set(statuses))}; latency ms p50={pct(50):.1f} "
              f"p95={pct(95):.1f} p99={pct(99):.1f} max={ms[-1]:.1f} "
              f"mean={statistics.mean(ms):.1f}")
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
