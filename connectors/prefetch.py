"""Read ahead: iterate a source (a connector's pages) in a background thread.

Used by the sync engine so the next pages are fetched from the CRM while the current one is
applied, and by the Salesforce connector so the next result batch is requested while the
current one is converted.

Rules kept here:
- At most ``depth`` items ahead (default one): the producer asks the source for item k+depth
  only once the consumer has taken item k, so at most ``depth`` items are read that the
  consumer may never use (a page fetched but not applied is re-read by the next run, from the
  cursor saved with the last applied page). Memory holds at most depth + 1 items.
- Order is the source's: items, then the source's end or its exception. An exception (any,
  ``BudgetExhausted`` and ``ConnectorError`` included) is re-raised in the consumer at the place
  it happened, with its traceback, after the items that came before it.
- ``close()`` (also on ``with`` exit, or when the consumer stops early: shutdown, budget, error)
  tells the producer to stop, waits for the item it is reading (every CRM call has its own
  timeout), closes the source in the producer's thread (a generator must be closed by the
  thread that runs it, and its ``finally`` blocks run there) and joins the thread. No thread is
  left running; a producer that outlives ``join_timeout`` is logged, and is a daemon.
- The producer runs in a copy of the consumer's context (``contextvars``: the run id).
- The source is only ever touched by the producer thread.
- Several readers can be consumed side by side (:class:`Arrivals`): each one given the same
  ``arrivals`` queue puts its ``tag`` there after every item, end or exception it hands out,
  so the consumer takes, in the order they arrive, only items that are ready; each reader's
  own order is kept.
"""
from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Generic, Self, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
_END = object()
_POLL = 0.5


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetch(Generic[T]):
    """An iterator over `source`, read one item ahead in a background thread."""

    def __init__(self, source: Iterable[T], *, name: str = "prefetch",
                 join_timeout: float = 600.0, depth: int = 1,
                 arrivals: Arrivals | None = None, tag: str = "") -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, not {depth}")
        self._source = source
        self._arrivals = arrivals
        self._tag = tag
        self._join_timeout = join_timeout
        self._results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wanted = threading.Semaphore(depth)   # `depth` reads ahead of the consumer
        self._stop = threading.Event()
        self._done = False
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._produce,), name=name,
                                        daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        iterator: Iterator[T] | None = None
        try:
            iterator = iter(self._source)
            while True:
                self._wanted.acquire()
                if self._stop.is_set():
                    return
                try:
                    item = next(iterator)
                except StopIteration:
                    self._put(_END)
                    return
                self._put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._put(_Raised(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - the source's own clean-up failing
                    log.exception("prefetch: closing the source failed")

    def _put(self, item: Any) -> None:
        self._results.put(item)
        if self._arrivals is not None:
            self._arrivals.arrived(self._tag)

    @property
    def alive(self) -> bool:
        """Whether the producer may still hand out something."""
        return self._thread.is_alive() or not self._results.empty()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        while True:
            try:
                item = self._results.get(timeout=_POLL)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._results.empty():
                    self._done = True
                    raise RuntimeError("prefetch: the producer ended without a result") from None
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Raised):
            self._done = True
            raise item.exc
        self._wanted.release()                      # the consumer holds item k: read k+1
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop reading ahead, close the source (in its thread) and join the thread."""
        self._done = True
        self._stop.set()
        self._wanted.release()                      # wake a producer waiting for permission
        self._thread.join(self._join_timeout)
        if self._thread.is_alive():
            log.warning("prefetch: thread %s still running after %.0f s",
                        self._thread.name, self._join_timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Arrivals:
    """The tags of side-by-side readers (``Prefetch(..., arrivals=this, tag=...)``) in the order
    their items arrive: :meth:`next_ready` returns the tag of a reader whose next item (or end,
    or exception) is ready, so ``next(reader)`` does not wait."""

    def __init__(self) -> None:
        self._tags: queue.SimpleQueue[str] = queue.SimpleQueue()

    def arrived(self, tag: str) -> None:
        self._tags.put(tag)

    def next_ready(self, readers: dict[str, Prefetch[Any]]) -> str:
        """The tag of one of ``readers`` with an item ready (waits for one); a tag of a reader
        no longer in ``readers`` is skipped. Raises ``RuntimeError`` when every reader's
        producer ended without handing out what it owes."""
        while True:
            try:
                tag = self._tags.get(timeout=_POLL)
            except queue.Empty:
                if readers and not any(r.alive for r in readers.values()):
                    raise RuntimeError("prefetch: the producers ended without a result") from None
                continue
            if tag in readers:
                return tag
