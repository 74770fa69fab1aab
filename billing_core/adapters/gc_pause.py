"""Pausing the cyclic garbage collector around a batch of work.

Rules kept here:
- A batch (a bill-run chunk read, computed or written; a sync page applied; a hand-off chunk;
  an outbox refresh chunk) allocates hundreds of thousands of objects that form no cycles
  (rows, records, lines, statements) and mostly outlive the batch, so the collector's passes
  over them find nothing to free while they cost a sizeable share of the CPU: about a third of
  a bill-run reader's and a tenth of its writer's; about a sixth of a full sync's (2.0 of
  11-12 CPU-seconds at 30,000 + 30,000, the full passes over the whole heap 1.9 of them).
- What the batch allocates is still freed by reference counting as it goes; the collector sees
  it once when it resumes. A batch is bounded (a chunk, a page), so what cyclic garbage it
  leaves waits for one batch at most.
- Paused only if it was on, and turned back on after (on an exception too), so that nested
  or overlapping batches in other threads leave it as they found it.
"""
from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


def gc_paused(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``func`` with the cyclic garbage collector paused (see the module's rules)."""
    @functools.wraps(func)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if not gc.isenabled():
            return func(*args, **kwargs)
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            gc.enable()
    return paused
