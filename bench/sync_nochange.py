"""What a sync with nothing changed costs after a full sync that pushed. Prints figures.

    .venv/bin/python bench/sync_nochange.py --accounts 10000 --crm salesforce
    .venv/bin/python bench/sync_nochange.py --accounts 10000 --crm dynamics
    .venv/bin/python bench/sync_nochange.py --accounts 10000 --crm dynamics --no-change-tracking
    .venv/bin/python bench/sync_nochange.py --accounts 10000 --crm salesforce \\
        --database-url postgresql://postgres@127.0.0.1:5432/test

Run 1 is a full sync with the push on (the first push writes every account's billing figures
back, so every account gets a new modification stamp from us); runs 2 and 3 follow at once with
nothing changed in the CRM. For each run: records read, query pages (calls to the CRM's query
endpoints), API calls, records pushed, bytes of every cursor, and the sync rows the run wrote:
``sync_runs`` and ``sync_run_objects`` rows added, ``sync_cursors`` rows written (the CRM
objects' cursors and the outbox's watermark), outbox rows updated.
``--no-change-tracking`` (Dataverse) reads accounts, quotes and quote lines by ``modifiedon``
instead of change tracking (an org that has not enabled it on those tables); products and
prices are read by ``modifiedon`` either way. ``--database-url`` takes a PostgreSQL URL: the
bench works in a schema of its own, dropped at the end. The sandbox runs in this process
(threads): the figures are counts, not times.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONN = {"salesforce": "sf", "dynamics": "d365"}
SIDE = {"salesforce": "salesforce", "dynamics": "dataverse"}
QUERY_ENDPOINTS = {"salesforce": ("query", "queryAll"), "dynamics": None}
NO_CHANGE_TRACKING = """\
[objects.account]
change_tracking = false
[objects.quote]
change_tracking = false
[objects.quote_line]
change_tracking = false
"""


@contextmanager
def database(url: str | None, tmp: Path) -> Iterator[str]:
    """The ledger's URL: a SQLite file in ``tmp``, or a fresh schema of the PostgreSQL
    database at ``url`` (dropped afterwards)."""
    if not url:
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    from sqlalchemy import text

    from billing_core.adapters.db import make_engine

    schema = f"lbnochange_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _world(sbx: Any, tmp: Path, conn: str, url: str, no_change_tracking: bool) -> Any:
    from billing_core.adapters.db import make_engine
    from config.settings import load_settings
    from connectors.registry import build_connector
    from jobs.cli.configs import sandbox_config
    from jobs.migrate import upgrade
    from jobs.worker import Worker

    text, env = sandbox_config(sbx, url, connections=(conn,))
    if no_change_tracking:
        (tmp / "fields.toml").write_text(NO_CHANGE_TRACKING, encoding="utf-8")
        text = text.replace(f"[connections.{conn}]\n", f"[connections.{conn}]\n"
                            f'fieldmap_overrides = "{tmp / "fields.toml"}"\n', 1)
    os.environ.update(env)
    (tmp / "c.toml").write_text(text, encoding="utf-8")
    settings = load_settings(tmp / "c.toml")
    engine = make_engine(settings.database_url)
    upgrade(engine)
    return Worker(engine, settings, connector_factory=lambda s: build_connector(
        s, sleep=lambda _s: None))


def _state(engine: Any) -> dict[str, Any]:
    from sqlalchemy import func, select

    from sync.tables import outbox, sync_cursors, sync_run_objects, sync_runs

    with engine.connect() as c:
        cursors = {(r.connection, r.object): (len(r.cursor or ""), r.updated_at)
                   for r in c.execute(select(sync_cursors))}
        return {
            "runs": c.execute(select(func.count()).select_from(sync_runs)).scalar_one(),
            "run_objects": c.execute(select(func.count()).select_from(sync_run_objects))
            .scalar_one(),
            "cursors": cursors,
            "outbox": {r.id: r.updated_at for r in c.execute(
                select(outbox.c.id, outbox.c.updated_at))},
        }


def _reads(sbx: Any, crm: str) -> int:
    side = SIDE[crm]
    if crm == "salesforce":
        return sum(sbx.counters.get(side, e) for e in QUERY_ENDPOINTS[crm] or ())
    return sum(sbx.counters.get(side, e, "GET") for e in ("accounts", "products", "quotes",
                                                          "quotedetails", "productpricelevels"))


def run(crm: str, accounts: int, quotes: int, url: str | None,
        no_change_tracking: bool) -> None:
    from connectors.sandbox.server import Sandbox

    conn = CONN[crm]
    with Sandbox(accounts=accounts, quotes=quotes, sides=(SIDE[crm],)) as sbx, \
            tempfile.TemporaryDirectory() as tmp, database(url, Path(tmp)) as db_url:
        worker = _world(sbx, Path(tmp), conn, db_url, no_change_tracking)
        how = " (no change tracking: modifiedon reads)" if no_change_tracking else ""
        print(f"{crm}{how}: {accounts} accounts, {quotes} quotes, {worker.engine.dialect.name}; "
              "run 1 full sync with push, runs 2-3 with nothing changed")
        print("run  outcome  read  per object                          query pages  API calls"
              "  pushed  cursor bytes  rows written: sync_runs / sync_run_objects / "
              "sync_cursors (CRM + watermark) / outbox")
        for n in (1, 2, 3):
            before = _state(worker.engine)
            sbx.counters.reset()
            t0 = time.perf_counter()
            report = worker.sync_connection(conn, worker.options("bench", full=(n == 1)),
                                            wait=True)
            wall = time.perf_counter() - t0
            after = _state(worker.engine)
            calls = sbx.counters.total(SIDE[crm])
            per = ", ".join(f"{o} {s.read}" for o, s in sorted(report.objects.items()))
            cursor_bytes = sum(size for size, _ in after["cursors"].values())
            moved = [k for k, v in after["cursors"].items() if before["cursors"].get(k) != v]
            watermark = sum(1 for _c, obj in moved if obj.startswith("_"))
            outbox_moved = sum(1 for k, v in after["outbox"].items()
                               if before["outbox"].get(k) != v)
            print(f"{n:>3}  {report.outcome:<7} {report.total('read'):>5}  {per:<35} "
                  f"{_reads(sbx, crm):>11}  {calls:>9}  {report.total('pushed'):>6}  "
                  f"{cursor_bytes:>12}  {after['runs'] - before['runs']} / "
                  f"{after['run_objects'] - before['run_objects']} / "
                  f"{len(moved)} ({len(moved) - watermark} + {watermark}) / {outbox_moved}"
                  f"   ({wall:.1f} s)")
        worker.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--quotes", type=int, default=0)
    ap.add_argument("--crm", choices=sorted(CONN), default="salesforce")
    ap.add_argument("--database-url", help="PostgreSQL URL (default: a SQLite file)")
    ap.add_argument("--no-change-tracking", action="store_true",
                    help="Dataverse: read accounts, quotes and lines by modifiedon")
    args = ap.parse_args()
    if args.no_change_tracking and args.crm != "dynamics":
        ap.error("--no-change-tracking is for --crm dynamics")
    logging.basicConfig(level=logging.ERROR)
    run(args.crm, args.accounts, args.quotes, args.database_url, args.no_change_tracking)


if __name__ == "__main__":
    main()
