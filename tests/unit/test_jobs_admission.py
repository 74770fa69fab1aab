"""Bounded admission of manual resyncs (jobs.admission): one queued run per (connection,
scope), a few per connection, the rest refused with a Retry-After."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from jobs.admission import Admission
from jobs.api.admin_sync import SyncBusy


def recorder() -> tuple[list[int], Callable[[], int]]:
    made: list[int] = []

    def record() -> int:
        made.append(len(made) + 1)
        return made[-1]
    return made, record


def test_a_request_for_a_queued_scope_joins_the_queued_run() -> None:
    made, record = recorder()
    admission = Admission(max_queued=2)
    assert admission.admit("sf", (None, False, None), record) == (1, True)
    assert admission.admit("sf", (None, False, None), record) == (1, False)
    assert made == [1] and admission.queued("sf") == [1]


def test_a_started_run_is_no_longer_queued_so_the_next_request_queues_a_new_one() -> None:
    made, record = recorder()
    admission = Admission()
    admission.admit("sf", (None, False, None), record)
    admission.started("sf", (None, False, None), 1)
    admission.started("sf", (None, False, None), 1)     # idempotent
    assert admission.admit("sf", (None, False, None), record) == (2, True)


def test_beyond_the_limit_a_connection_refuses_and_others_are_not_affected() -> None:
    made, record = recorder()
    admission = Admission(max_queued=2, retry_after=7)
    admission.admit("sf", ("account", False, None), record)
    admission.admit("sf", (None, True, None), record)
    with pytest.raises(SyncBusy) as refused:
        admission.admit("sf", ("quote", False, None), record)
    assert refused.value.retry_after == 7 and made == [1, 2]
    assert admission.admit("d365", (None, False, None), record) == (3, True)
