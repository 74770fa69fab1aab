"""Sync benchmarks against the sandbox CRM (Salesforce side) into SQLite. Prints figures.

    .venv/bin/python bench/sync.py --accounts 100000 --quotes 100000 [--repeat 3]
    .venv/bin/python bench/sync.py --incremental 1000 --among 1000000

Full pull: the raw read (the connector fetching and parsing the same pages, no processing)
against the real sync (map, reconcile, hand off, outbox; push off), records/s and the ratio,
CPU time of this process, peak RSS; then the run's phases (``RunReport.phases``: the pull,
the hand-off of the accepted quotes into orders, the outbox refresh) and the pull's own ratio
to the raw read. The target is on the whole run's ratio. ``--rss-trace`` prints the process's
RSS and peak RSS (``/proc/self/status``: VmRSS, VmHWM) at every 100,000 records the sync
applied, and after it (the hand-off and the outbox run after the pull). ``--replay`` serves
the sync the pages its raw read returned, from memory (all of them: about 1 KB a record): the
sync with reading free (no fetching, parsing or mapping to canonical records), the bound of
any design that reads in another process, since the pull cannot end before the read does.
Incremental: ``--incremental`` changes among ``--among`` CRM accounts, from a cursor set at
"now" (billing holds only what it read): wall time and API calls against the minimum the CRM
limits allow (ceil(changes/2000) query pages per object, ceil(changes/200) collection calls).

The sandbox CRM runs in a child process (``connectors.sandbox.remote``), driven over its HTTP
admin API, because a real CRM is another machine: in-process, its server threads generate the
JSON pages under this interpreter's GIL, so they slow the sync down and their CPU counts on both
sides of the ratio. ``--in-process`` keeps the old set-up (one process, threads) for comparison.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OBJECTS = ("account", "product", "price", "quote", "quote_line")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _vm() -> str:
    """VmRSS and VmHWM of this process (Linux ``/proc``), in MB."""
    try:
        fields = dict(line.split(":", 1) for line in
                      Path("/proc/self/status").read_text().splitlines() if ":" in line)
        rss, hwm = (int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))
    except (OSError, KeyError, ValueError):
        return "RSS unknown"
    return f"RSS {rss:.0f} MB, peak {hwm:.0f} MB"


class _RssTrace:
    """The sync's progress callback of ``--rss-trace``: one line at every ``every`` records
    applied."""

    def __init__(self, every: int = 100_000) -> None:
        self.every, self.applied, self.next = every, 0, every

    def __call__(self, obj: str, n: int) -> None:
        self.applied += n
        if self.applied >= self.next:
            self.next += self.every * ((self.applied - self.next) // self.every + 1)
            print(f"  rss: {self.applied:9d} records applied ({obj}): {_vm()}", flush=True)


def _crm_cpu(sbx: Any) -> float | None:
    """CPU seconds the sandbox CRM's child process has used so far (Linux ``/proc``); None
    in process. On a 2-core machine the CRM's CPU during the sync is the share of the second
    core the sync cannot have."""
    proc = getattr(sbx, "_proc", None)
    if proc is None:
        return None
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _world(sbx: Any, tmp: Path) -> Any:
    from billing_core.adapters.db import make_engine
    from config.settings import load_settings
    from connectors.registry import build_connector
    from jobs.cli.demo_crm import sandbox_config
    from jobs.migrate import upgrade
    from jobs.worker import Worker

    text, env = sandbox_config(sbx, f"sqlite:///{tmp / 'bench.db'}", connections=("sf",))
    os.environ.update(env)
    (tmp / "c.toml").write_text(text, encoding="utf-8")
    settings = load_settings(tmp / "c.toml")
    engine = make_engine(settings.database_url)
    upgrade(engine)
    return Worker(engine, settings, connector_factory=lambda s: build_connector(
        s, sleep=lambda _s: None))


def _sandbox(accounts: int, quotes: int, in_process: bool) -> Any:
    if in_process:
        from connectors.sandbox.server import Sandbox
        return Sandbox(accounts=accounts, quotes=quotes, sides=("salesforce",))
    from connectors.sandbox.remote import RemoteSandbox
    return RemoteSandbox(accounts=accounts, quotes=quotes, sides=("salesforce",))


def full(accounts: int, quotes: int, profile: bool = False, in_process: bool = False,
         repeat: int = 1, resync: bool = False, rss_trace: bool = False,
         replay: bool = False) -> None:
    """``repeat`` pairs of (raw read, sync), each sync into a fresh database, against one
    sandbox; with more than one pair, the median ratio closes the report (the raw read's own
    speed varies from run to run on a shared machine, and moves the ratio with it)."""
    where = "in process" if in_process else "in a child process"
    ratios: list[float] = []
    with _sandbox(accounts, quotes, in_process) as sbx, tempfile.TemporaryDirectory() as tmp:
        for n in range(1, repeat + 1):
            ratios.append(_pair(sbx, Path(tmp) / f"pair{n}", accounts, quotes, where,
                                profile and n == 1, resync, rss_trace, replay))
    if repeat > 1:
        ordered = sorted(ratios)
        print(f"median ratio over {repeat} pairs: {statistics.median(ordered):.2f}x wall "
              f"(each: {', '.join(f'{r:.2f}' for r in ordered)}; target <= 1.5x)")


def _pair(sbx: Any, tmp: Path, accounts: int, quotes: int, where: str, profile: bool,
          resync: bool = False, rss_trace: bool = False, replay: bool = False) -> float:
    (tmp / "raw").mkdir(parents=True)
    (tmp / "sync").mkdir()
    sbx.counters.reset()
    worker = _world(sbx, tmp / "raw")
    conn = worker.connector("sf")
    served: dict[str, list[Any]] | None = {o: [] for o in OBJECTS} if replay else None
    t0, c0, n_raw, k0 = time.perf_counter(), time.process_time(), 0, _crm_cpu(sbx)
    for obj in OBJECTS:
        for page in conn.read_changes(obj, None):
            n_raw += len(page.records)
            if served is not None:
                served[obj].append(page)
    raw, raw_cpu = time.perf_counter() - t0, time.process_time() - c0
    raw_crm = _since(_crm_cpu(sbx), k0)
    raw_calls = sbx.counters.total("salesforce")
    rss_raw = _rss_mb()
    if rss_trace:
        print(f"  rss: after the raw read of {n_raw} records: {_vm()}", flush=True)
    sbx.counters.reset()
    worker.close()
    worker2 = _world(sbx, tmp / "sync")
    if served is not None:
        _replay(worker2.connector("sf"), served)
    profiler = cProfile.Profile() if profile else None
    t0, c0, k0 = time.perf_counter(), time.process_time(), _crm_cpu(sbx)
    if profiler:
        profiler.enable()
    report = worker2.sync_connection("sf", worker2.options("bench", push=False), wait=True,
                                     progress=_RssTrace() if rss_trace else None)
    if profiler:
        profiler.disable()
    if rss_trace:
        print(f"  rss: after the sync (pull, hand-off, outbox): {_vm()}", flush=True)
    synced, sync_cpu = time.perf_counter() - t0, time.process_time() - c0
    sync_crm = _since(_crm_cpu(sbx), k0)
    n_sync = report.total("read") if report else 0
    pages = sbx.counters.get("salesforce", "query") + sbx.counters.get("salesforce", "queryAll")
    minimum = sum(math.ceil(max(s.read, 1) / 2000) for s in report.objects.values())
    again = _resync(worker2, raw) if resync else None
    worker2.close()
    print(f"full pull: {accounts} accounts, {quotes} quotes, {n_raw} records in all "
          f"(sandbox {where})")
    print(f"  raw read : {raw:8.1f} s  {n_raw / raw:9.0f} records/s  CPU {raw_cpu:7.1f} s  "
          f"({raw_calls} calls, peak RSS {rss_raw:.0f} MB){_crm(raw_crm)}")
    print(f"  {'replayed' if replay else 'sync':9s}: {synced:8.1f} s  "
          f"{n_sync / synced:9.0f} records/s  CPU {sync_cpu:7.1f} s  "
          f"({report.outcome}, handed off {report.handed_off}, "
          f"peak RSS {_rss_mb():.0f} MB){_crm(sync_crm)}")
    print(f"  ratio sync/raw: {synced / raw:.1f}x wall, {sync_cpu / raw_cpu:.1f}x CPU "
          f"(target <= 1.5x)")
    phases = report.phases
    print("  phases   : " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
          + f"; the pull alone (read, map, reconcile, write) {phases.get('pull', 0) / raw:.2f}x "
          "the raw read")
    if not replay:
        print(f"  query pages: {pages}, minimum the CRM allows: {minimum}, "
              f"ratio {pages / max(minimum, 1):.2f}")
    if again:
        print(again)
    if profiler:
        kept = Path(tempfile.gettempdir()) / "ledgerbridge-sync.prof"
        profiler.dump_stats(kept)
        print(f"  profile kept in {kept} (python -m pstats {kept})")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return synced / raw


def _replay(conn: Any, served: dict[str, list[Any]]) -> None:
    """``conn`` serves the pages in ``served`` instead of reading the CRM. It feeds a full
    read's sweep as the connector does, so the sweep's writes are timed as in a live sync (a
    first full read finds nothing missing)."""
    from connectors.base import page_ids

    def read_changes(obj: str, cursor: str | None, *, run_started: Any = None,
                     sweep: Any = None) -> Any:
        if sweep is not None:
            sweep.begin()
        for page in served[obj]:
            if sweep is not None:
                sweep.saw(page_ids(page.records, page.deletions))
            yield page

    conn.read_changes = read_changes


def _since(now: float | None, before: float | None) -> float | None:
    return None if now is None or before is None else now - before


def _crm(cpu: float | None) -> str:
    return "" if cpu is None else f", CRM process CPU {cpu:.1f} s"


def _resync(worker: Any, raw: float) -> str:
    """A full resync (``ledgerbridge sync --full``) of the ledger the pull just filled: every
    record comes again unchanged, and what billing knows is swept for what disappeared."""
    t0, c0 = time.perf_counter(), time.process_time()
    report = worker.sync_connection("sf", worker.options("bench", push=False, full=True),
                                    wait=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return (f"  full resync of that ledger: {wall:.1f} s ({wall / raw:.1f}x the raw read), "
            f"CPU {cpu:.1f} s, read {report.total('read')}, unchanged "
            f"{report.total('unchanged')}, disappeared {len(report.disappeared)}, "
            f"{report.outcome}, peak RSS {_rss_mb():.0f} MB")


def incremental(changes: int, among: int, in_process: bool = False) -> None:
    from sync.runs import save_cursor

    with _sandbox(among, 0, in_process) as sbx, tempfile.TemporaryDirectory() as tmp:
        worker = _world(sbx, Path(tmp))
        stamp = datetime.now(UTC)
        with worker.engine.begin() as c:
            for obj in OBJECTS:
                save_cursor(c, "sf", obj, json.dumps(
                    {"mode": "stamp", "stamp": stamp.isoformat(), "seen": {}}), stamp)
        time.sleep(0.01)
        step = max(among // changes, 1)
        for i in range(changes):
            sbx.salesforce.admin("update", {"object": "Account", "index": i * step,
                                            "fields": {"Credit_Limit__c": 1000 + i}})
        sbx.counters.reset()
        t0 = time.perf_counter()
        report = worker.sync_connection("sf", worker.options("bench"), wait=True)
        wall = time.perf_counter() - t0
        reads = sbx.counters.get("salesforce", "queryAll") + sbx.counters.get("salesforce",
                                                                               "query")
        writes = sbx.counters.get("salesforce", "composite/sobjects")
        min_reads = sum(max(math.ceil(report.objects[o].read / 2000), 1) for o in OBJECTS
                        if o in report.objects)
        min_writes = math.ceil(report.total("pushed") / 200)
        print(f"incremental: {changes} changes among {among} CRM accounts")
        print(f"  wall {wall:.1f} s, outcome {report.outcome}, read {report.total('read')}, "
              f"pushed {report.total('pushed')}")
        print(f"  query pages {reads} (minimum {min_reads}), collection calls {writes} "
              f"(minimum {min_writes}); API calls / minimum = "
              f"{(reads + writes) / max(min_reads + min_writes, 1):.2f}")
        worker.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--quotes", type=int, default=10_000)
    ap.add_argument("--incremental", type=int, default=0)
    ap.add_argument("--among", type=int, default=1_000_000)
    ap.add_argument("--profile", action="store_true",
                    help="profile the sync of the full pull (cProfile: top 40 by cumulative time, "
                         "top 25 by own time; the stats file is kept)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="full pull: this many (raw read, sync) pairs, then the median ratio")
    ap.add_argument("--resync", action="store_true",
                    help="after each full pull, time a full resync (--full) of the same ledger")
    ap.add_argument("--rss-trace", action="store_true",
                    help="full pull: print RSS and peak RSS at every 100,000 records applied")
    ap.add_argument("--replay", action="store_true",
                    help="full pull: the sync is served the raw read's pages from memory (the "
                         "sync's cost with reading free)")
    ap.add_argument("--in-process", action="store_true",
                    help="run the sandbox CRM in this process (threads) instead of a child process")
    args = ap.parse_args()
    import logging
    logging.basicConfig(level=logging.ERROR)
    if args.incremental:
        incremental(args.incremental, args.among, args.in_process)
    else:
        full(args.accounts, args.quotes, args.profile, args.in_process, max(args.repeat, 1),
             args.resync, args.rss_trace, args.replay)


if __name__ == "__main__":
    main()
