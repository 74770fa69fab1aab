"""A dispatcher in a process of its own, for the multi-process dispatch tests
(``test_dispatch_workers.py``): ``python dispatch_child.py SCHEMA OUT MODE``.

It dispatches the queue of the PostgreSQL schema ``SCHEMA`` (``dispatch_pending``, batches of
4, the tests' fixed clock) and appends one line per request it is handed to ``OUT``:
``<request id> <idempotency key> <attempt> <pid>``, flushed at once, so a killed process
leaves what it was handed. ``MODE``: ``all`` prints ``ready``, waits for a line on stdin
(so the test starts several at the same instant), then works until the queue is empty; ``hang``
prints ``claimed`` after its first request and then blocks for ever (the test kills it while
it holds its batch's claims).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from credit_helpers import START  # noqa: E402

from billing_core.adapters.db import make_engine  # noqa: E402
from billing_core.adapters.provisioners.base import ProvisioningTask  # noqa: E402
from billing_core.service.provisioning import dispatch_pending  # noqa: E402

PG_URL = os.environ.get("LEDGERBRIDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


class _Appending:
    name = "appending"

    def __init__(self, out: Path, hang: bool) -> None:
        self.out, self.hang = out, hang

    def provision(self, task: ProvisioningTask) -> str:
        with self.out.open("a", encoding="utf-8") as f:
            f.write(f"{task.request_id} {task.idempotency_key} {task.attempt} {os.getpid()}\n")
        if self.hang:
            print("claimed", flush=True)
            while True:
                time.sleep(60)
        time.sleep(0.01)           # a little send time, so the processes interleave
        return "dispatched"


def main() -> None:
    schema, out, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    if mode == "all":
        print("ready", flush=True)
        sys.stdin.readline()
    try:
        dispatch_pending(engine, _Appending(out, mode == "hang"), limit=None, batch=4,
                         clock=lambda: START, worker_id=f"child{os.getpid()}")
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
