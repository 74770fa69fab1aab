"""On PostgreSQL a bill-run chunk takes its invoice numbers as its transaction commits, not
when it starts writing (``billing_io._number``, ``UnitOfWork.at_commit``), so the number
series' row lock is held only for the numbering, the audit rows, credit control's hook and the
commit; two workers' chunks write everything else at the same time. On SQLite, where one
writing transaction runs at a time anyway, the numbers are taken before the insert and written
with the invoices; so are they on PostgreSQL when the chunk's writer is alone (a partitioned
run that no other process holds a live unit of: the series lock held for the whole chunk then
keeps no one waiting, and every invoice row is written once). Either way numbers stay gapless
and in account order, and a chunk rolled back takes none.

Worked: 3 accounts (ids in creation order) with one 30.00 seat each from 1 March 2026, billed
on 1 April: INV-000001..3 in account order; a chunk rolled back takes nothing, so the next
posted invoice is INV-000004 whatever was written and thrown away before it.
"""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import event, select, text

from billing_core.adapters import work_units
from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import invoices
from billing_core.service import bill_run
from billing_core.service.billing_io import (
    NUMBER_AT_COMMIT_DIALECTS,
    load_catalog,
    load_chunk,
    write_chunk,
)
from billing_core.service.numbering import peek_next

RUN = date(2026, 4, 1)


def _accounts(ledger, n: int) -> list[int]:
    seat = ledger.product("30.00")
    accs = [ledger.account() for _ in range(n)]
    for acc in accs:
        ledger.subscribe(acc, seat, 1, date(2026, 3, 1))
    return accs


def _chunk(ledger, lo: int, hi: int):
    with ledger.uow() as uow:
        return load_chunk(uow.conn, load_catalog(uow.conn), RUN, lo - 1, 100, upto=hi)


def _numbers(ledger) -> dict[int, str | None]:
    with ledger.uow() as uow:
        return dict(uow.conn.execute(select(invoices.c.account_id, invoices.c.number)).all())


def test_numbers_are_taken_when_the_chunk_commits(ledger) -> None:
    accs = _accounts(ledger, 3)
    data = _chunk(ledger, accs[0], accs[-1])
    with ledger.uow() as uow:
        written = write_chunk(uow, data, run_id=None, post=True, series="INV", issue_date=RUN)
        in_transaction = [n for _, n in uow.conn.execute(
            select(invoices.c.id, invoices.c.number).order_by(invoices.c.id))]
        if uow.conn.dialect.name in NUMBER_AT_COMMIT_DIALECTS:
            # written, not numbered yet: the series is untouched until the commit
            assert in_transaction == [None, None, None]
            assert peek_next(uow.conn, "INV") == 1
        else:
            assert in_transaction == ["INV-000001", "INV-000002", "INV-000003"]
            assert written.numbers == in_transaction
        uow.rollback()                          # thrown away: nothing taken
    assert _numbers(ledger) == {}
    with ledger.uow() as uow:
        assert peek_next(uow.conn, "INV") == 1
        written = write_chunk(uow, data, run_id=None, post=True, series="INV", issue_date=RUN)
        uow.commit()
    assert written.numbers == ["INV-000001", "INV-000002", "INV-000003"]
    assert _numbers(ledger) == dict(zip(accs, written.numbers, strict=True))
    with ledger.uow() as uow:
        assert peek_next(uow.conn, "INV") == 4


def test_a_dry_run_still_shows_the_numbers_it_would_take(ledger) -> None:
    accs = _accounts(ledger, 2)
    preview = ledger.run(RUN, dry_run=True)
    assert [(p.account_id, p.number) for p in preview.invoices] == [
        (accs[0], "INV-000001"), (accs[1], "INV-000002")]
    assert _numbers(ledger) == {}
    done = ledger.run(RUN)
    assert [p.number for p in done.invoices] == ["INV-000001", "INV-000002"]


def test_the_audit_row_of_a_posted_invoice_names_its_number(ledger) -> None:
    accs = _accounts(ledger, 2)
    ledger.run(RUN)
    with ledger.uow() as uow:
        rows = uow.conn.execute(text(
            "SELECT account_id, action, entity_ref FROM audit_log WHERE entity_type = 'invoice' "
            "ORDER BY account_id")).all()
    assert [tuple(r) for r in rows] == [(accs[0], "posted", "INV-000001"),
                                        (accs[1], "posted", "INV-000002")]


def test_a_second_worker_commits_its_chunk_while_the_first_is_still_writing(pg_ledger) -> None:
    """PostgreSQL: worker A has written its chunk and not committed; worker B writes and
    commits another chunk meanwhile (with the numbers taken first, B would wait for A's lock on
    the series row until A ended: ``lock_timeout`` turns that wait into an error). Then A
    commits: B has INV-000001..2, A INV-000003..4, no gap."""
    ledger = pg_ledger
    accs = _accounts(ledger, 4)
    first, second = _chunk(ledger, accs[0], accs[1]), _chunk(ledger, accs[2], accs[3])
    a_written = threading.Event()
    outcome: dict[str, object] = {}

    with ledger.uow() as a:
        write_chunk(a, first, run_id=None, post=True, series="INV", issue_date=RUN)
        a_written.set()

        def worker_b() -> None:
            try:
                with ledger.uow() as b:
                    b.conn.execute(text("SET LOCAL lock_timeout = '20s'"))
                    outcome["numbers"] = write_chunk(b, second, run_id=None, post=True,
                                                     series="INV", issue_date=RUN).numbers
                    b.commit()
            except Exception as exc:  # noqa: BLE001 (asserted below)
                outcome["error"] = exc

        thread = threading.Thread(target=worker_b)
        thread.start()
        thread.join(60)
        assert not thread.is_alive()
        assert "error" not in outcome, outcome.get("error")
        assert outcome["numbers"] == ["INV-000001", "INV-000002"]
        a.commit()
    assert _numbers(ledger) == {accs[0]: "INV-000003", accs[1]: "INV-000004",
                                accs[2]: "INV-000001", accs[3]: "INV-000002"}


@pytest.mark.parametrize("fail_at", ["numbering", "hook"])
def test_a_failure_at_commit_leaves_no_number_taken(ledger, fail_at, monkeypatch) -> None:
    """The numbering step, or a commit hook after it, fails: the chunk rolls back whole and the
    series is where it was."""
    accs = _accounts(ledger, 2)
    data = _chunk(ledger, accs[0], accs[1])
    from billing_core.service import billing_io

    def boom(*_a, **_k):
        raise RuntimeError(f"{fail_at} failed")

    with ledger.uow() as uow:
        if fail_at == "numbering":
            monkeypatch.setattr(billing_io, "take_numbers", boom)
        else:
            uow.before_commit.append(boom)
        with pytest.raises(RuntimeError, match=fail_at):   # SQLite numbers at the insert
            write_chunk(uow, data, run_id=None, post=True, series="INV", issue_date=RUN)
            uow.commit()
    assert _numbers(ledger) == {}
    with ledger.uow() as uow:
        assert peek_next(uow.conn, "INV") == 1


def test_a_commit_step_goes_with_the_savepoint_that_failed(ledger) -> None:
    """``at_commit`` steps registered inside a savepoint that rolls back are dropped with it;
    those registered before or after it run once, in order, at the commit."""
    ran: list[str] = []
    with ledger.uow() as uow:
        uow.at_commit(lambda u: ran.append("before"))
        with pytest.raises(RuntimeError), uow.savepoint():
            uow.at_commit(lambda u: ran.append("inside"))
            raise RuntimeError("this item fails")
        uow.at_commit(lambda u: ran.append("after"))
        uow.commit()
        uow.commit()                    # nothing left to run
    assert ran == ["before", "after"]


# -- alone: numbers with the insert ------------------------------------------------------------
NUMBERING_UPDATE = re.compile(r'UPDATE "?invoices"?( AS t)? SET number', re.IGNORECASE)


@contextmanager
def _numbering_updates(engine):
    """The statements that number invoices already inserted (the at-commit way)."""
    seen: list[str] = []

    def listen(_conn, _cursor, statement, *_rest) -> None:
        if NUMBERING_UPDATE.search(statement):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def test_a_chunk_written_alone_takes_its_numbers_with_the_insert(ledger) -> None:
    """Both databases: ``alone`` numbers the invoices in the insert, in account order, inside
    the transaction (no second write of the rows); a rollback still takes nothing."""
    accs = _accounts(ledger, 3)
    data = _chunk(ledger, accs[0], accs[-1])
    for keep in (False, True):
        with _numbering_updates(ledger.engine) as updates, ledger.uow() as uow:
            written = write_chunk(uow, data, run_id=None, post=True, series="INV",
                                  issue_date=RUN, alone=True)
            in_transaction = [n for _, n in uow.conn.execute(
                select(invoices.c.id, invoices.c.number).order_by(invoices.c.id))]
            assert in_transaction == ["INV-000001", "INV-000002", "INV-000003"]
            assert written.numbers == in_transaction
            if keep:
                uow.commit()
            else:
                uow.rollback()
        assert updates == []
    assert _numbers(ledger) == dict(zip(accs, ["INV-000001", "INV-000002", "INV-000003"],
                                        strict=True))
    with ledger.uow() as uow:
        assert peek_next(uow.conn, "INV") == 4


def test_a_partitioned_run_alone_numbers_with_the_insert(pg_ledger) -> None:
    """PostgreSQL, one process in the run: every chunk numbers with its insert, none with an
    UPDATE at commit; the numbers run gapless in account order."""
    accs = _accounts(pg_ledger, 7)
    with _numbering_updates(pg_ledger.engine) as updates:
        done = pg_ledger.run(RUN, chunk_size=2)
    assert done.invoices_created == 7
    assert updates == []
    assert _numbers(pg_ledger) == {a: f"INV-{k:06d}" for k, a in enumerate(accs, start=1)}


def test_a_partitioned_run_shared_with_another_worker_numbers_at_commit(pg_ledger) -> None:
    """PostgreSQL: while another process holds a live unit of the run, this process's chunks
    number as they commit (its writes may overlap the other's); the other's unit, given back
    and finished later, takes the numbers after them: gapless over the whole run."""
    accs = _accounts(pg_ledger, 7)
    engine = pg_ledger.engine
    opts = bill_run.BillRunOptions(wait_for_others=False, poll_seconds=0.05)
    run_id, _ = bill_run._create_or_join(engine, RUN, 2, opts)
    other = "1@another-host/0"              # a live process on another machine
    with UnitOfWork(engine) as uow:
        [held] = work_units.claim(uow.conn, bill_run.job_name(run_id), datetime.now(UTC),
                                  timedelta(minutes=10), limit=1, worker=other)
        uow.commit()
    with _numbering_updates(engine) as updates:
        first = pg_ledger.run(RUN, chunk_size=2, options=opts)
    assert first.run_id == run_id and first.invoices_created == 5
    assert len(updates) == 3                # one per chunk written: units 2, 3 and 4
    with UnitOfWork(engine) as uow:
        assert work_units.release(uow.conn, [held.id], worker=other) == 1
        uow.commit()
    with _numbering_updates(engine) as updates:
        rest = pg_ledger.run(RUN, chunk_size=2, options=opts)
    assert rest.run_id == run_id and rest.invoices_created == 2
    assert updates == []                    # alone by then
    numbers = _numbers(pg_ledger)
    assert sorted(numbers.values()) == [f"INV-{k:06d}" for k in range(1, 8)]
    assert [numbers[a] for a in accs[:2]] == ["INV-000006", "INV-000007"]
