"""Our own writes left out of the next reads (``connectors.cursor`` own ranges, issue 15): no
person's change is ever lost, whatever the interleaving of people's writes (some committed late,
stamped inside the overlap window), our pulls, our pushes and the reads that claim them."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.cursor import StampTracker, decode

T0 = datetime(2026, 11, 21, 12, tzinfo=UTC)
OVERLAP = timedelta(seconds=30)
MS = timedelta(milliseconds=1)
ME, PERSON = "005ME", "005PERSON"


@dataclass(frozen=True)
class Row:
    stamp: datetime
    by: str
    person: int      # what a person set (the fields billing reads)
    ours: int = 0    # what we push


def read(crm: dict[str, Row], cursor: str | None, now: datetime, claim: bool,
         known: dict[str, int]) -> tuple[str | None, int]:
    """One complete read as the Salesforce connector makes it; returns the cursor and how many
    rows the CRM returned."""
    tracker = StampTracker(cursor, OVERLAP, now, user=ME)
    since, own = tracker.since, tracker.excluded
    returned = sorted(
        ((i, r) for i, r in crm.items()
         if (since is None or r.stamp >= since)
         and not (own is not None and r.by == own.user and own.start <= r.stamp < own.end)),
        key=lambda x: (x[1].stamp, x[0]))
    for crm_id, row in returned:
        if tracker.admit(crm_id, row.stamp, row.by):
            known[crm_id] = row.person
    if claim:
        tracker.claim()
    return tracker.cursor() or cursor, len(returned)


def person_writes(crm: dict[str, Row], batch: list[tuple[int, int, int]], now: datetime) -> None:
    for ident, age, value in batch:
        crm_id = f"id{ident}"
        old = crm.get(crm_id)
        # committed now, stamped up to 25 s earlier (a late commit, inside the overlap); a row
        # lock orders writes to one row, so never before that row's current stamp
        stamp = now - timedelta(seconds=age)
        if old is not None:
            stamp = max(stamp, old.stamp + MS)
        crm[crm_id] = Row(stamp, PERSON, value, old.ours if old else 0)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 25), st.integers(1, 99)), max_size=6),
    st.lists(st.integers(0, 9), max_size=6),          # rows we push after the pull
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 25), st.integers(1, 99)), max_size=3),
    st.booleans()),                                    # read our writes back in the same run
    min_size=1, max_size=6))
def test_no_persons_change_is_lost(steps: list[tuple[list[tuple[int, int, int]], list[int],
                                                      list[tuple[int, int, int]], bool]]
                                   ) -> None:
    crm: dict[str, Row] = {}
    known: dict[str, int] = {}
    cursor: str | None = None
    wrote = False
    now = T0
    for before, pushed, after, settle in steps:
        now += timedelta(seconds=10)
        person_writes(crm, before, now)
        cursor, _ = read(crm, cursor, now, wrote, known)          # the run's pull
        wrote = False
        for k, ident in enumerate(pushed):                      # our push, after the pull
            crm_id = f"id{ident}"
            old = crm.get(crm_id)
            if old is None:
                continue
            stamp = max(now + (k + 1) * MS, old.stamp + MS)
            crm[crm_id] = replace(old, stamp=stamp, by=ME, ours=old.ours + 1)
            wrote = True
        now += timedelta(seconds=1)
        if settle and wrote:                                    # read back in the same run
            cursor, _ = read(crm, cursor, now, True, known)
            wrote = False
        person_writes(crm, after, now)                          # during or just after
    now += timedelta(seconds=100)
    cursor, _ = read(crm, cursor, now, wrote, known)
    assert known == {i: r.person for i, r in crm.items()}


def test_a_read_after_our_writes_claims_them_and_the_next_read_leaves_them_out() -> None:
    crm = {f"id{i}": Row(T0 - timedelta(hours=1), PERSON, i) for i in range(5)}
    known: dict[str, int] = {}
    cursor, returned = read(crm, None, T0, False, known)
    assert returned == 5 and decode(cursor).get("own") is None
    for k, crm_id in enumerate(sorted(crm)):                     # we push every row
        crm[crm_id] = replace(crm[crm_id], stamp=T0 + (k + 1) * MS, by=ME, ours=1)
    cursor, returned = read(crm, cursor, T0 + timedelta(seconds=1), True, known)
    state = decode(cursor)
    assert returned == 5
    assert state["own"] == {"user": ME, "from": (T0 - timedelta(hours=1)).isoformat(),
                            "to": (T0 + 5 * MS).isoformat()}
    assert list(state["seen"]) == ["id4"]        # only the row stamped at the range's end
    again, returned = read(crm, cursor, T0 + timedelta(seconds=2), False, known)
    assert returned == 1 and again == cursor     # the boundary row, already seen
    # a person's late commit inside our range is read
    crm["id9"] = Row(T0 + 2 * MS, PERSON, 42)
    _, returned = read(crm, cursor, T0 + timedelta(seconds=3), False, known)
    assert returned == 2 and known["id9"] == 42


def test_a_claim_joins_the_previous_range_only_when_the_read_covered_the_gap() -> None:
    start = T0 + timedelta(minutes=10)
    own = {"user": ME, "from": T0.isoformat(), "to": (T0 + timedelta(seconds=5)).isoformat()}
    near = json.dumps({"mode": "stamp", "stamp": (T0 + timedelta(seconds=20)).isoformat(),
                       "seen": {}, "own": own})
    tracker = StampTracker(near, OVERLAP, start, user=ME)
    tracker.admit("a", T0 + timedelta(seconds=40), ME)
    tracker.claim()
    assert tracker.own is not None and tracker.own.start == T0
    far = json.dumps({"mode": "stamp", "stamp": (T0 + timedelta(seconds=60)).isoformat(),
                      "seen": {}, "own": own})
    tracker = StampTracker(far, OVERLAP, start, user=ME)
    tracker.admit("a", T0 + timedelta(seconds=70), ME)
    tracker.claim()
    assert tracker.own is not None and tracker.own.start == T0 + timedelta(seconds=60)


def test_a_write_sharing_its_stamp_with_the_last_read_is_new_by_its_version() -> None:
    """Dataverse stamps whole seconds: a person's edit in the second of our write (or of the
    read) keeps the row's stamp; its version tells it apart. A cursor saved without versions
    compares stamps alone, as before."""
    at = T0.replace(microsecond=0)
    tracker = StampTracker(None, OVERLAP, at + timedelta(minutes=1))
    assert tracker.admit("A", at, version="100")
    saved = tracker.cursor()
    assert saved is not None and json.loads(saved)["vers"] == {"A": "100"}
    again = StampTracker(saved, OVERLAP, at + timedelta(minutes=2))
    assert not again.admit("A", at, version="100")        # the same write, read again
    assert again.admit("A", at, version="101")            # another write in the same second
    old = StampTracker(json.dumps({"mode": "stamp", "stamp": at.isoformat(),
                                   "seen": {"A": at.isoformat()}}), OVERLAP, at)
    assert not old.admit("A", at, version="101")


def test_a_settled_claim_ends_after_the_unit_of_our_newest_write() -> None:
    """Whole-second stamps (Dataverse): a read that began long enough after our writes claims
    their last second too, and our rows of that second leave the cursor; without `settled`
    they stay in `seen`, to be read again and de-duplicated on every run."""
    second = timedelta(seconds=1)
    at = T0.replace(microsecond=0)
    cursors = {}
    for settled in (None, second):
        tracker = StampTracker(json.dumps({"mode": "stamp", "stamp": (at - 60 * second)
                                           .isoformat(), "seen": {}}), OVERLAP,
                               at + 10 * second, user=ME)
        for n, stamp in enumerate((at, at, at + second, at + second)):
            assert tracker.admit(f"R{n}", stamp, ME, version=str(n))
        assert tracker.admit("P", at + second, PERSON, version="9")
        tracker.claim(settled)
        cursors[settled] = json.loads(tracker.cursor() or "{}")
    plain, whole = cursors[None], cursors[second]
    assert plain["own"]["to"] == (at + second).isoformat()
    assert set(plain["seen"]) == {"R2", "R3", "P"}        # ours of the last second stay
    assert whole["own"]["to"] == (at + 2 * second).isoformat()
    assert set(whole["seen"]) == {"P"}                    # a person's row is never claimed
