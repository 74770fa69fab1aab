"""connectors.prefetch: items read ahead in a background thread, in order, errors in place, clean stop."""
from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator

import pytest

from connectors.base import BudgetExhausted, ConnectorError
from connectors.prefetch import Prefetch


class Source:
    """A generator source that records what was read, in which thread, and its clean-up."""

    def __init__(self, n: int | None = None, fail_at: int | None = None,
                 exc: BaseException | None = None) -> None:
        self.n, self.fail_at, self.exc = n, fail_at, exc
        self.produced: list[int] = []
        self.threads: set[str] = set()
        self.closed_in: str | None = None

    def __iter__(self) -> Iterator[int]:
        i = 0
        try:
            while self.n is None or i < self.n:
                self.threads.add(threading.current_thread().name)
                if i == self.fail_at:
                    assert self.exc is not None
                    raise self.exc
                self.produced.append(i)
                yield i
                i += 1
        finally:
            self.closed_in = threading.current_thread().name


def test_items_come_in_order_and_the_source_runs_in_the_producer_thread() -> None:
    src = Source(50)
    with Prefetch(src, name="pf-order") as items:
        assert list(items) == list(range(50))
        assert next(items, "end") == "end"                 # stays exhausted
    assert src.threads == {"pf-order"} and src.closed_in == "pf-order"


@pytest.mark.parametrize("exc", [BudgetExhausted("budget spent"), ConnectorError("503: down"),
                                 ValueError("broken page")])
def test_an_exception_is_raised_in_the_consumer_after_the_items_before_it(
        exc: BaseException) -> None:
    items = Prefetch(Source(10, fail_at=3, exc=exc))
    got = []
    with pytest.raises(type(exc)) as raised:
        for item in items:
            got.append(item)
    items.close()
    assert got == [0, 1, 2] and raised.value is exc
    assert next(items, "end") == "end"


def test_an_early_stop_reads_at_most_one_item_ahead_and_closes_the_source() -> None:
    src = Source()                                          # endless
    items = Prefetch(src, name="pf-early")
    taken = [next(items) for _ in range(3)]
    items.close()
    assert taken == [0, 1, 2]
    assert src.produced in ([0, 1, 2], [0, 1, 2, 3])         # item 3 at most: one ahead
    assert src.closed_in == "pf-early"                      # closed by the thread that ran it
    assert not any(t.name == "pf-early" for t in threading.enumerate())


@pytest.mark.parametrize("depth", [2, 3])
def test_a_deeper_read_ahead_reads_at_most_depth_items_ahead(depth: int) -> None:
    src = Source()                                          # endless
    items = Prefetch(src, depth=depth)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    for _ in range(200):                                    # let the producer run ahead
        if len(src.produced) >= 3 + depth:
            break
        threading.Event().wait(0.01)
    produced = list(src.produced)
    items.close()
    assert produced == list(range(3 + depth))               # depth ahead, and no more
    assert src.produced == produced


def test_depth_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="depth"):
        Prefetch(Source(1), depth=0)


def test_close_before_the_first_item_is_taken() -> None:
    src = Source()
    Prefetch(src, name="pf-unused").close()
    assert src.produced in ([], [0]) and not any(
        t.name == "pf-unused" for t in threading.enumerate())


def test_a_source_that_cannot_be_iterated_fails_in_the_consumer() -> None:
    with Prefetch(42, name="pf-bad") as items, pytest.raises(TypeError):  # type: ignore[arg-type]
        next(items)


def test_the_producer_sees_the_consumers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("run 7")

    def source() -> Iterator[str]:
        yield var.get()

    with Prefetch(source()) as items:
        assert list(items) == ["run 7"]
