"""Property: reading by stamp cursor, with crashes between pages and rows committed late inside
the overlap, never loses a row version and never hands one out twice while it fits in `seen`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.cursor import StampTracker

T0 = datetime(2026, 11, 21, 12, tzinfo=UTC)
OVERLAP = timedelta(seconds=30)


def read(rows: list[tuple[str, datetime]], cursor: str | None, page: int, stop_after: int | None,
         run_started: datetime) -> tuple[list[list[tuple[str, datetime]]], list[str | None]]:
    tracker = StampTracker(cursor, OVERLAP, run_started)
    since = tracker.since
    chosen = sorted((r for r in rows if since is None or r[1] >= since), key=lambda r: (r[1], r[0]))
    pages, cursors, current = [], [], []
    for crm_id, stamp in chosen:
        if tracker.admit(crm_id, stamp):
            current.append((crm_id, stamp))
        if len(current) == page:
            pages.append(current)
            cursors.append(tracker.cursor())
            current = []
            if stop_after is not None and len(pages) >= stop_after:
                return pages, cursors
    pages.append(current)
    cursors.append(tracker.cursor() or cursor)
    return pages, cursors


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 40)), max_size=12),
                     min_size=1, max_size=5),
    page=st.integers(1, 4),
    crash=st.lists(st.one_of(st.none(), st.integers(1, 3)), min_size=5, max_size=5),
)
def test_no_row_version_is_lost_or_repeated(batches: list[list[tuple[int, int]]], page: int,
                                            crash: list[int | None]) -> None:
    rows: dict[str, datetime] = {}
    delivered: list[tuple[str, datetime]] = []
    cursor: str | None = None
    now = T0
    for n, batch in enumerate(batches):
        now = now + timedelta(seconds=20)
        for ident, age in batch:  # a row written now, stamped up to 20 s in the past (late)
            rows[f"id{ident}"] = now - timedelta(seconds=age % 20)
        current = sorted(rows.items())
        pages, cursors = read(current, cursor, page, crash[n], now)
        for got, cur in zip(pages, cursors, strict=True):
            delivered += got  # the engine applies the page and saves its cursor together
            cursor = cur or cursor
        if crash[n] is not None:  # the crashed run is followed by a clean one
            pages, cursors = read(current, cursor, page, None, now)
            for got, cur in zip(pages, cursors, strict=True):
                delivered += got
                cursor = cur or cursor
    assert set(rows.items()) <= set(delivered)  # every latest version handed out
    assert len(delivered) == len(set(delivered))  # and none twice
