"""How much work a read does, without a clock: SQLite's count of virtual-machine steps (its
progress handler, called every ``EVERY`` steps), for the read-cost tests
(``tests/integration/*/test_*read_cost.py``), which compare the same work in a small and a
much larger table."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

EVERY = 10


def steps(engine: Engine, read: Callable[[Any], Any]) -> tuple[int, Any]:
    """Steps (in tens) that ``read(conn)`` takes on one connection, and what it returns."""
    with counting(engine) as counted, engine.connect() as conn:
        got = read(conn)
    return counted.steps, got


class _Counter:
    def __init__(self) -> None:
        self.steps = 0
        self.raw: list[Any] = []

    def tick(self) -> int:
        self.steps += 1
        return 0


@contextmanager
def counting(engine: Engine) -> Iterator[_Counter]:
    """Counts the steps of every connection the engine hands out inside the block (a service
    that opens its own units of work); ``.steps`` is the count in tens. The handlers are taken
    off again after the block."""
    counted = _Counter()

    def checkout(dbapi_conn: Any, *_: Any) -> None:
        dbapi_conn.set_progress_handler(counted.tick, EVERY)
        counted.raw.append(dbapi_conn)

    event.listen(engine, "checkout", checkout)
    try:
        yield counted
    finally:
        event.remove(engine, "checkout", checkout)
        for raw in counted.raw:
            raw.set_progress_handler(None, EVERY)
