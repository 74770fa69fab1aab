"""A batch pauses the cyclic collector around itself and leaves it as it was."""
from __future__ import annotations

import gc

import pytest

from billing_core.adapters.gc_pause import gc_paused


@gc_paused
def _state(fail: bool = False) -> bool:
    if fail:
        raise ValueError("boom")
    return gc.isenabled()


def test_collector_paused_during_the_call_and_on_again_after() -> None:
    assert gc.isenabled()
    assert _state() is False
    assert gc.isenabled()


def test_collector_on_again_after_an_exception() -> None:
    with pytest.raises(ValueError):
        _state(fail=True)
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_caller_stays_off() -> None:
    gc.disable()
    try:
        assert _state() is False
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_nested_calls_leave_it_on() -> None:
    @gc_paused
    def outer() -> tuple[bool, bool]:
        return _state(), gc.isenabled()

    assert outer() == (False, False)
    assert gc.isenabled()
