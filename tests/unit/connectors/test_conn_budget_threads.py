"""The budget meter shared by readers side by side: the share is never passed, however the
threads interleave, and each reader's calls are counted apart (``call_tally``)."""
from __future__ import annotations

import contextvars
import threading
import time

import pytest

from connectors.base import BudgetExhausted
from connectors.budget import BudgetMeter, CallTally, call_tally


def test_threads_taking_calls_together_never_pass_the_share(
        monkeypatch: pytest.MonkeyPatch) -> None:
    meter = BudgetMeter(0.5)
    meter.seed(0, 100)                 # 50 calls allowed
    known = BudgetMeter._known

    def slow_known(self: BudgetMeter):  # type: ignore[no-untyped-def]
        figure = known(self)
        time.sleep(0.0005)              # widen the window between the check and the count
        return figure

    monkeypatch.setattr(BudgetMeter, "_known", slow_known)
    stopped: list[int] = []

    def reader() -> None:
        try:
            while True:
                meter.take()
        except BudgetExhausted:
            stopped.append(1)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(stopped) == 8
    assert meter.calls == 50 and meter.snapshot().calls == 50


def test_each_reader_counts_its_own_calls_in_its_tally() -> None:
    meter = BudgetMeter(0.8)
    tallies = {name: CallTally() for name in ("lines", "accounts")}

    def reader(name: str, n: int) -> None:
        call_tally.set(tallies[name])
        for _ in range(n):
            meter.take()

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(reader, name, n))
               for name, n in (("lines", 40), ("accounts", 25))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    meter.take()                        # a call with no tally set: counted by the meter only
    assert {n: t.calls for n, t in tallies.items()} == {"lines": 40, "accounts": 25}
    assert meter.calls == 66


def test_a_refused_call_is_not_counted() -> None:
    meter, tally = BudgetMeter(0.5), CallTally()
    meter.seed(49, 100)
    token = call_tally.set(tally)
    try:
        meter.take()
        with pytest.raises(BudgetExhausted):
            meter.take()
    finally:
        call_tally.reset(token)
    assert meter.calls == 1 and tally.calls == 1
