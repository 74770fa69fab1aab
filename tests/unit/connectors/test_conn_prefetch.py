"""connectors.prefetch: items read ahead in a background thread, in order, errors in place, clean stop."""
from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator

import pytest

from connectors.base import BudgetExhausted, ConnectorError
from connectors.prefetch import Arrivals, Prefetch


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


def _side_by_side(sources: dict[str, Iterator[int]]) -> tuple[dict[str, list[int]],
                                                              dict[str, BaseException], list[str]]:
    """Consume several readers side by side as the sync does; what each gave, what each
    raised, and the order the items were taken in."""
    arrivals = Arrivals()
    readers = {tag: Prefetch(src, name=f"pf-{tag}", depth=2, arrivals=arrivals, tag=tag)
               for tag, src in sources.items()}
    got: dict[str, list[int]] = {tag: [] for tag in sources}
    raised: dict[str, BaseException] = {}
    order: list[str] = []
    try:
        while readers:
            tag = arrivals.next_ready(readers)
            try:
                got[tag].append(next(readers[tag]))
                order.append(tag)
            except StopIteration:
                readers.pop(tag).close()
            except ConnectorError as exc:
                raised[tag] = exc
                readers.pop(tag).close()
    finally:
        for reader in readers.values():
            reader.close()
    return got, raised, order


def test_readers_side_by_side_each_keep_their_order_and_a_fast_one_is_not_held_back() -> None:
    slow_gate = threading.Event()
    waited_in_vain: list[bool] = []

    def slow() -> Iterator[int]:
        yield 0
        # answered only once the fast reader has been consumed to its end
        waited_in_vain.append(not slow_gate.wait(10))
        yield from range(1, 5)

    def fast() -> Iterator[int]:
        yield from range(20)
        slow_gate.set()

    got, raised, order = _side_by_side({"slow": slow(), "fast": fast()})
    assert got == {"slow": list(range(5)), "fast": list(range(20))} and not raised
    assert waited_in_vain == [False]
    second_slow = [i for i, t in enumerate(order) if t == "slow"][1]
    assert second_slow > max(i for i, t in enumerate(order) if t == "fast")


def test_a_reader_side_by_side_that_fails_fails_alone_after_its_items() -> None:
    got, raised, _ = _side_by_side({
        "bad": iter(Source(10, fail_at=3, exc=ConnectorError("refused"))),
        "good": iter(Source(30))})
    assert got == {"bad": [0, 1, 2], "good": list(range(30))}
    assert list(raised) == ["bad"] and str(raised["bad"]) == "refused"
    assert not any(t.name.startswith("pf-") for t in threading.enumerate())
