"""Which touched quotes the hand-off looks at: decided per page, in SQL, on both databases."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import Engine, insert

from sync.handoff_reads import worth_a_look
from sync.tables import handoffs, sync_records

NOW = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
ACCEPTED = frozenset({"Accepted", "Won"})


def _quote(crm_id: str, status: str, *, deleted: bool = False, connection: str = "sf",
           obj: str = "quote") -> dict[str, object]:
    data = json.dumps({"crm_id": crm_id, "account_crm_id": "A1", "status": status,
                       "revision": 1, "number": None, "name": None, "start_date": None},
                      sort_keys=True)
    return {"connection": connection, "object": obj, "crm_id": crm_id, "content_hash": "h",
            "data": data, "updated_at": NOW, "deleted_at": NOW if deleted else None}


def test_accepted_now_or_handed_off_before_and_nothing_else(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(sync_records), [
            _quote("Q1", "Accepted"), _quote("Q2", "Won"), _quote("Q3", "Draft"),
            _quote("Q4", "Draft"), _quote("Q5", "Accepted", deleted=True),
            _quote("Q6", "Accepted", deleted=True), _quote("Q7", "Accepted", connection="d365"),
            _quote("Q8", "Accepted", obj="quote_line"), _quote("Q9", "accepted")])
        conn.execute(insert(handoffs), [
            {"connection": "sf", "quote_crm_id": q, "revision": 1, "source_ref": f"sf:{q}:rev1",
             "state": "done", "created_at": NOW, "updated_at": NOW} for q in ("Q4", "Q6")])
    with engine.connect() as conn:
        wanted = ["Q1", "Q2", "Q3", "Q4", "Q5", "Q6", "Q7", "Q8", "Q9", "UNKNOWN"]
        assert worth_a_look(conn, "sf", wanted, ACCEPTED) == {"Q1", "Q2", "Q4", "Q6"}
        assert worth_a_look(conn, "sf", wanted, frozenset()) == {"Q4", "Q6"}
        assert worth_a_look(conn, "sf", [], ACCEPTED) == set()


def test_many_quotes_are_judged_in_chunks(engine: Engine) -> None:
    rows = [_quote(f"Q{n:05d}", "Accepted" if n % 3 == 0 else "Draft") for n in range(4500)]
    with engine.begin() as conn:
        conn.execute(insert(sync_records), rows)
    with engine.connect() as conn:
        kept = worth_a_look(conn, "sf", [str(r["crm_id"]) for r in rows], ACCEPTED)
    assert kept == {f"Q{n:05d}" for n in range(0, 4500, 3)}
