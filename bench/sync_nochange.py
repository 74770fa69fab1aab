"""What a sync with nothing changed costs after a full sync that pushed. Prints figures.

    .venv/bin/python bench/sync_nochange.py --accounts 10000 --quotes 0 --crm salesforce
    .venv/bin/python bench/sync_nochange.py --accounts 10000 --quotes 0 --crm dynamics

Run 1 is a full sync with the push on (the first push writes every account's billing figures
back, so every account gets a new modification stamp from us); runs 2 and 3 follow at once with
nothing changed in the CRM. For each run: records read, query pages (calls to the CRM's query
endpoints), API calls, records pushed, bytes of every cursor, and the sync rows the run wrote
(``sync_runs`` and ``sync_run_objects`` rows added, cursors and outbox rows updated).
The sandbox runs in this process (threads): the figures are counts, not times.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONN = {"salesforce": "sf", "dynamics": "d365"}
SIDE = {"salesforce": "salesforce", "dynamics": "dataverse"}
QUERY_ENDPOINTS = {"salesforce": ("query", "queryAll"), "dynamics": None}


def _world(sbx: Any, tmp: Path, conn: str) -> Any:
    from billing_core.adapters.db import make_engine
    from config.settings import load_settings
    from connectors.registry import build_connector
    from jobs.cli.configs import sandbox_config
    from jobs.migrate import upgrade
    from jobs.worker import Worker

    text, env = sandbox_config(sbx, f"sqlite:///{tmp / 'bench.db'}", connections=(conn,))
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


def run(crm: str, accounts: int, quotes: int) -> None:
    from connectors.sandbox.server import Sandbox

    conn = CONN[crm]
    with Sandbox(accounts=accounts, quotes=quotes, sides=(SIDE[crm],)) as sbx, \
            tempfile.TemporaryDirectory() as tmp:
        worker = _world(sbx, Path(tmp), conn)
        print(f"{crm}: {accounts} accounts, {quotes} quotes; run 1 full sync with push, "
              "runs 2-3 with nothing changed")
        print("run  outcome  read  per object                          query pages  API calls"
              "  pushed  cursor bytes  rows written (runs+run objects / cursors / outbox)")
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
            moved = sum(1 for k, v in after["cursors"].items()
                        if before["cursors"].get(k) != v)
            outbox_moved = sum(1 for k, v in after["outbox"].items()
                               if before["outbox"].get(k) != v)
            run_rows = (after["runs"] - before["runs"]) + (after["run_objects"]
                                                           - before["run_objects"])
            print(f"{n:>3}  {report.outcome:<7} {report.total('read'):>5}  {per:<35} "
                  f"{_reads(sbx, crm):>11}  {calls:>9}  {report.total('pushed'):>6}  "
                  f"{cursor_bytes:>12}  {run_rows} / {moved} / {outbox_moved}   ({wall:.1f} s)")
        worker.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--quotes", type=int, default=0)
    ap.add_argument("--crm", choices=sorted(CONN), default="salesforce")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    run(args.crm, args.accounts, args.quotes)


if __name__ == "__main__":
    main()
