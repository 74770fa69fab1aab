"""Sync and dispatch shared by 1, 2 and 3 worker processes on one PostgreSQL ledger.

    .venv/bin/python bench/scale_sync.py                                  # 1, 2 and 3 workers
    .venv/bin/python bench/scale_sync.py --workers 2 --accounts 20000 --queued 5000

Setting: the sandbox CRM (Salesforce side, a child process: a real CRM is another machine)
holds ``accounts`` accounts and ``quotes`` quotes; the ledger has four connections to it
(``sf1`` .. ``sf4``, each its own accounts, catalog and orders in billing), nothing synced yet,
and a provisioning backlog of ``queued`` pending requests (``bench/dispatch.py``'s). Then
``workers`` processes start at the same instant, each a ``jobs.worker.Worker`` doing what the
daemon's jobs do: each connection's sync (``sync_connection``, the scheduled kind: a connection
another worker holds is skipped, not waited for; a connection a run of this bench already
synced is done), in an order rotated per worker, then the dispatch job (``Worker.dispatch``,
claims with ``SKIP LOCKED``), again until every connection is synced and nothing is left to
claim. The push is off (all four connections write to the same sandbox records).

Figures: wall (from the go to the last worker's exit), CPU summed over the workers (each
process's own user + system time from the go to its exit; the start-up before it, imports and
connecting, is shown apart), rows claimed twice (provisioning requests handed to a
provisioner more than once, over all workers: must be 0), syncs per connection that read
records (must be 1 each; a worker that checked "not synced yet" just before another finished
the connection runs it again and reads nothing: counted apart, as ``repeat_syncs``), and a
digest of the ledger's outcome (orders, requests and their states, dispatched
and quarantine) that must be the same whatever the number of workers. ``--kill-one``: the first
worker of each run of 2 or more is killed (SIGKILL) right after its first sync page commits;
the others finish its connection (its run is closed as abandoned) and its claims.

As a module: ``run(workers, ...) -> dict`` (``bench/scale.py`` calls it); ``sandbox(...)``
starts a sandbox that several runs can share.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECTIONS = ("sf1", "sf2", "sf3", "sf4")
TRIGGER = "bench-scale"


@contextmanager
def sandbox(accounts: int, quotes: int) -> Iterator[Any]:
    """The sandbox CRM in a child process (Salesforce side), for one or more runs."""
    from connectors.sandbox.remote import RemoteSandbox

    with RemoteSandbox(accounts=accounts, quotes=quotes, sides=("salesforce",)) as sbx:
        yield sbx


def _config(sbx: Any, url: str, connections: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The sandbox's config with its one Salesforce connection repeated as ``connections``."""
    from jobs.cli.configs import sandbox_config

    text, env = sandbox_config(sbx, url, connections=("sf",))
    head, _, sf = text.partition("[connections.sf]")
    parts = [head, '[provisioner]\nkind = "log"\n']
    for name in connections:
        parts.append(f"[connections.{name}]" + sf.replace("[connections.sf.",
                                                         f"[connections.{name}."))
    return "\n".join(parts), env


@contextmanager
def _schema(url: str) -> Iterator[str]:
    """A fresh migrated PostgreSQL schema; yields the URL that works in it; dropped after."""
    from sqlalchemy import text

    from billing_core.adapters.db import make_engine
    from jobs.migrate import upgrade

    name = f"lbscale_{uuid.uuid4().hex[:8]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    inside = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"
    try:
        engine = make_engine(inside)
        upgrade(engine)
        engine.dispose()
        yield inside
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def _backlog(url: str, queued: int) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from dispatch import build

    from billing_core.adapters.db import make_engine
    from billing_core.service import ledger_uow
    from billing_core.service.holds import release_manual_hold

    engine = make_engine(url)
    try:
        held, _ = build(engine, queued)
        with ledger_uow(engine) as uow:
            release_manual_hold(uow, held, admin="bench")
            uow.commit()
    finally:
        engine.dispose()


def _digest(url: str) -> dict[str, Any]:
    """What the workers left, the same whatever their number: counts and a hash of the
    orders, requests and their states, and what each connection's sync read."""
    from sqlalchemy import func, select

    from billing_core.adapters.db import make_engine
    from billing_core.adapters.tables import accounts, orders, products
    from billing_core.adapters.tables import provisioning_requests as pr
    from sync.tables import quarantine, sync_run_objects, sync_runs

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(select(sync_runs.c.connection, sync_runs.c.outcome,
                                       sync_runs.c.id)
                                .where(sync_runs.c.trigger == TRIGGER,
                                       sync_runs.c.outcome.in_(("ok", "partial")))).all()
            reads = sorted((str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in conn.execute(
                select(sync_runs.c.connection, sync_run_objects.c.object,
                       sync_run_objects.c.read, sync_run_objects.c.quarantined)
                .join(sync_runs, sync_runs.c.id == sync_run_objects.c.run_id)
                .where(sync_runs.c.trigger == TRIGGER,
                       sync_runs.c.outcome.in_(("ok", "partial")))))
            closed = int(conn.execute(select(func.count()).select_from(sync_runs).where(
                sync_runs.c.outcome.in_(("abandoned", "running")))).scalar_one())
            reading = {int(r) for r in conn.execute(select(sync_run_objects.c.run_id).where(
                sync_run_objects.c.read > 0).distinct()).scalars()}
            per_conn = Counter(r[0] for r in runs if r[2] in reading)
            repeats = Counter(r[0] for r in runs if r[2] not in reading)
            states: Counter[str] = Counter(dict(conn.execute(select(pr.c.state, func.count())
                                               .group_by(pr.c.state)).all()))
            order_refs = sorted(str(r) for r in conn.execute(select(orders.c.source_ref))
                                .scalars())
            # by what they are, not by ids or keys: keys derive from row ids, which depend
            # on how the connections' inserts interleaved
            keys = sorted(f"{r[0]}|{r[1]}|{r[2]}|{r[3]:f}|{r[4]}" for r in conn.execute(
                select(orders.c.source_ref, products.c.sku, pr.c.change_kind, pr.c.quantity,
                       pr.c.state).join(orders, orders.c.id == pr.c.order_id)
                .join(products, products.c.id == pr.c.product_id)))
            held_back = sorted(f"{r[0]}/{r[1]}/{r[2]}: {r[3]}" for r in conn.execute(
                select(quarantine.c.connection, quarantine.c.object, quarantine.c.field,
                       quarantine.c.reason)))
            n_accounts = int(conn.execute(select(func.count()).select_from(accounts))
                             .scalar_one())
    finally:
        engine.dispose()
    detail = {"orders": order_refs, "requests": keys, "accounts": n_accounts,
              "quarantine": held_back}
    body = json.dumps(detail, sort_keys=True)
    return {"syncs_per_connection": dict(sorted(per_conn.items())),
            "repeat_syncs": dict(sorted(repeats.items())),
            "sync_outcomes": sorted({str(r[1]) for r in runs}),
            "abandoned_runs": closed,
            "accounts": n_accounts, "orders": len(order_refs),
            "records_read": sum(r[2] for r in reads),
            "quarantined": Counter(held_back).most_common(5),
            "requests": dict(sorted(states.items())),
            "digest": hashlib.sha256(body.encode()).hexdigest()[:16], "detail": detail}


def run(workers: int, *, accounts: int = 5000, quotes: int = 5000, queued: int = 2000,
        database_url: str = DEFAULT_URL, sbx: Any = None,
        connections: Sequence[str] = CONNECTIONS, kill_one: bool = False) -> dict[str, Any]:
    """One measurement: ``workers`` processes over a fresh schema (see the module's text).
    ``sbx``: a running sandbox (``sandbox()``) to share between runs; None starts one.
    ``kill_one``: the first worker is killed (SIGKILL) right after its first sync page
    commits; the others must finish its connection and leave the same ledger (its figures
    are then left out of the CPU sum and the claims count)."""
    if sbx is None:
        with sandbox(accounts, quotes) as own:
            return run(workers, accounts=accounts, quotes=quotes, queued=queued,
                       database_url=database_url, sbx=own, connections=connections,
                       kill_one=kill_one)
    with tempfile.TemporaryDirectory(prefix="lbscale-") as tmp, _schema(database_url) as url:
        _backlog(url, queued)
        text, env = _config(sbx, url, connections)
        cfg = Path(tmp) / "c.toml"
        cfg.write_text(text, encoding="utf-8")
        procs = []
        for n in range(workers):
            out = Path(tmp) / f"worker{n}.json"
            procs.append((out, subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--child", str(cfg),
                 "--out", str(out), "--rotate", str(n), "--connections", ",".join(connections)],
                cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)))
        for _, p in procs:                  # every worker imported and connected: go
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a worker did not start: {line!r}")
        t0 = time.perf_counter()
        for _, p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.close()
        drains = []
        if kill_one:
            victim = procs[0][1]
            assert victim.stdout is not None
            for line in victim.stdout:
                if line.startswith("page "):
                    break
            victim.send_signal(signal.SIGKILL)
        for _, p in procs:                   # their page lines, so no pipe fills up
            drains.append(threading.Thread(target=_drain, args=(p,), daemon=True))
            drains[-1].start()
        codes = [p.wait() for _, p in procs]
        wall = time.perf_counter() - t0
        if kill_one:
            codes = codes[1:]
            procs = procs[1:]
        if any(codes):
            raise RuntimeError(f"worker exit codes {codes}")
        results = [json.loads(out.read_text(encoding="utf-8")) for out, _ in procs]
        handed = Counter(i for r in results for i in r["handed"])
        outcome = _digest(url)
    return {
        "workers": workers, "killed": 1 if kill_one else 0,
        "connections": len(connections), "accounts": accounts,
        "quotes": quotes, "queued": queued, "wall_s": round(wall, 2),
        "cpu_s": round(sum(r["cpu_s"] for r in results), 2),
        "cpu_per_worker_s": [round(r["cpu_s"], 2) for r in results],
        "cpu_start_s": round(sum(r["cpu_start_s"] for r in results), 2),
        "synced_by_worker": [r["synced"] for r in results],
        "dispatched_by_worker": [len(r["handed"]) for r in results],
        "skipped_held": sum(r["skipped"] for r in results),
        "rows_claimed_twice": sum(1 for c in handed.values() if c > 1),
        "dispatched": len(handed), **outcome,
        "load": round(os.getloadavg()[0], 1),
    }


def _drain(proc: subprocess.Popen[str]) -> None:
    if proc.stdout is not None:
        for _ in proc.stdout:
            pass


class _Handing:
    """The log provisioner's answer, remembering which requests this worker was handed."""
    name = "bench"

    def __init__(self) -> None:
        self.handed: list[int] = []

    def provision(self, task: Any) -> str:
        self.handed.append(int(task.request_id))
        return "dispatched"


def _child(cfg: Path, out: Path, rotate: int, connections: list[str]) -> None:
    """One worker process: syncs of the connections no run of this bench synced yet (a
    held one skipped), the dispatch job, again until all are synced and nothing is left."""
    from sqlalchemy import select

    from billing_core.adapters.db import make_engine
    from config.settings import load_settings
    from connectors.registry import build_connector
    from jobs.worker import Worker
    from sync.tables import sync_runs

    settings = load_settings(cfg)
    engine = make_engine(settings.database_url)
    worker = Worker(engine, settings, connector_factory=lambda s: build_connector(
        s, sleep=lambda _s: None))
    handing = _Handing()
    worker._provisioner = handing  # type: ignore[assignment]  # noqa: SLF001 - counts hand-outs
    with engine.connect() as conn:
        conn.execute(select(1))
    print("ready", flush=True)
    sys.stdin.readline()
    started = datetime.now(UTC)
    ready = resource.getrusage(resource.RUSAGE_SELF)
    order = connections[rotate % len(connections):] + connections[:rotate % len(connections)]
    synced: list[str] = []
    skipped = 0

    def progress(obj: str, n: int) -> None:
        print(f"page {obj} {n}", flush=True)    # the parent may kill this worker now

    def done() -> set[str]:
        with engine.connect() as conn:
            return {str(c) for c in conn.execute(
                select(sync_runs.c.connection).where(
                    sync_runs.c.trigger == TRIGGER,
                    sync_runs.c.outcome.in_(("ok", "partial")))).scalars()}

    while True:
        left = [c for c in order if c not in done()]
        for name in left:
            if name in done():          # another worker finished it meanwhile
                continue
            report = worker.sync_connection(name, worker.options(TRIGGER, push=False),
                                            progress=progress)
            if report is None:
                skipped += 1
            else:
                synced.append(name)
        dispatched = worker.dispatch()
        claimed = dispatched.claimed if dispatched is not None else 0
        if not left and not claimed:
            break
        if not claimed and left and not synced:
            time.sleep(0.05)
    worker.close()
    engine.dispose()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.write_text(json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime
                               - ready.ru_utime - ready.ru_stime,
                               "cpu_start_s": ready.ru_utime + ready.ru_stime, "synced": synced,
                               "skipped": skipped, "handed": handing.handed,
                               "started": started.isoformat()}), encoding="utf-8")


def _print(result: dict[str, Any], base: dict[str, Any] | None) -> None:
    ratio = ""
    if base is not None:
        ratio = (f"  wall {result['wall_s'] / base['wall_s']:.2f}x, "
                 f"CPU {result['cpu_s'] / base['cpu_s']:.2f}x of 1 worker; "
                 f"outcome {'same' if result['digest'] == base['digest'] else 'DIFFERENT'}")
    print(f"{result['workers']} worker(s): wall {result['wall_s']:.1f} s, CPU summed "
          f"{result['cpu_s']:.1f} s {result['cpu_per_worker_s']} (+ start-up "
          f"{result['cpu_start_s']:.1f} s), rows claimed twice "
          f"{result['rows_claimed_twice']}, syncs per connection "
          f"{result['syncs_per_connection']}, dispatched {result['dispatched']} "
          f"{result['dispatched_by_worker']}, synced {result['synced_by_worker']}, held "
          f"skips {result['skipped_held']}, killed {result['killed']} (abandoned runs "
          f"{result['abandoned_runs']}), digest {result['digest']}, load {result['load']}"
          + (f"\n {ratio}" if ratio else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, action="append",
                    help="worker processes (repeatable; default 1, 2 and 3)")
    ap.add_argument("--accounts", type=int, default=5000)
    ap.add_argument("--quotes", type=int, default=5000)
    ap.add_argument("--queued", type=int, default=2000)
    ap.add_argument("--database-url", default=DEFAULT_URL)
    ap.add_argument("--json", action="store_true", help="one JSON object per run")
    ap.add_argument("--kill-one", action="store_true",
                    help="SIGKILL the first worker after its first sync page (runs of 2+)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--rotate", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--connections", default=",".join(CONNECTIONS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.ERROR)
    if args.child is not None:
        _child(args.child, args.out, args.rotate, args.connections.split(","))
        return 0
    counts = args.workers or [1, 2, 3]
    if any(n < 1 for n in counts):
        ap.error(f"--workers: {min(counts)}: must be at least 1")
    if not args.database_url.startswith("postgresql"):
        ap.error(f"--database-url: {args.database_url}: must be a PostgreSQL URL")
    results: list[dict[str, Any]] = []
    with sandbox(args.accounts, args.quotes) as sbx:
        for n in counts:
            result = run(n, accounts=args.accounts, quotes=args.quotes, queued=args.queued,
                         database_url=args.database_url, sbx=sbx,
                         kill_one=args.kill_one and n > 1)
            results.append(result)
            if args.json:
                print(json.dumps({k: v for k, v in result.items() if k != "detail"},
                                 sort_keys=True), flush=True)
            else:
                _print(result, results[0] if results[0] is not result else None)
    bad = [r for r in results if r["rows_claimed_twice"]
           or set(r["syncs_per_connection"].values()) != {1}
           or r["digest"] != results[0]["digest"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
