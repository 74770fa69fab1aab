"""Hold reasons: overdue with grace, provenance of each reason, manual holds, the policy knobs,
and the hourly re-evaluation for days passing."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from credit_helpers import Ledger, make_account, post_invoice

from billing_core.domain.credit import CreditPolicy
from billing_core.domain.errors import InvalidState, RuleViolation, ValidationError
from billing_core.service.accounts import set_credit_limit, set_crm_hold
from billing_core.service.credit_control import run_reevaluation
from billing_core.service.holds import (
    history,
    history_after,
    list_holds,
    place_manual_hold,
    release_manual_hold,
)
from billing_core.service.payments import record_payment


def _hourly(ledger: Ledger, **kw: object) -> dict[str, int]:
    return run_reevaluation(ledger.engine, ledger.clock.today, ledger.policy, chunk_size=1,
                            uow_factory=ledger.uow, **kw)  # type: ignore[arg-type]


def test_overdue_placed_after_due_plus_grace_lifted_by_payment_kept_by_second(ledger, clock):
    ledger.policy = CreditPolicy(overdue_grace_days=3)
    today = clock.today
    acc = ledger.run(lambda u: make_account(u, "LATE"))
    other = ledger.run(lambda u: make_account(u, "OTHER"))
    first = ledger.run(lambda u: post_invoice(u, acc, 10000, issue=today, due=today + timedelta(10)))
    assert ledger.reasons(acc) == set()

    clock.advance(13)                         # due + 3 grace days: not yet
    assert _hourly(ledger)["placed"] == 0
    clock.advance(1)                          # the day after: overdue
    assert _hourly(ledger) == {"accounts": 1, "placed": 1, "lifted": 0}   # only past due
    assert ledger.reasons(acc) == {"overdue"} and ledger.reasons(other) == set()
    assert _hourly(ledger, only_past_due=False) == {"accounts": 2, "placed": 0, "lifted": 0}

    ledger.run(lambda u: post_invoice(u, acc, 5000, issue=clock.today - timedelta(20),
                                      due=clock.today - timedelta(5)))
    ledger.run(lambda u: record_payment(u, acc, "100.00", reference="P1", auto_apply=True))
    assert ledger.reasons(acc) == {"overdue"}  # the second invoice is overdue too
    ledger.run(lambda u: record_payment(u, acc, "50.00", reference="P2", auto_apply=True))
    assert ledger.reasons(acc) == set()
    with ledger.engine.connect() as conn:
        trail = history(conn, acc)
    assert [(h["reason"], h["action"]) for h in trail] == [("overdue", "placed"),
                                                           ("overdue", "lifted")]
    assert trail[0]["details"]["documents"][0]["id"] == first


def test_credit_limit_follows_limit_and_threshold(ledger, clock):
    ledger.policy = CreditPolicy(limit_threshold=Decimal("0.9"))
    today = clock.today
    acc = ledger.run(lambda u: make_account(u, "LIM", limit="1000.00"))
    ledger.run(lambda u: post_invoice(u, acc, 90000, issue=today, due=today + timedelta(30)))
    assert ledger.reasons(acc) == set()       # 900 is not above 90 % of 1,000
    ledger.run(lambda u: post_invoice(u, acc, 1, issue=today, due=today + timedelta(30)))
    assert ledger.reasons(acc) == {"credit_limit"}
    ledger.run(lambda u: set_credit_limit(u, acc, "2000.00"))
    assert ledger.reasons(acc) == set()
    ledger.run(lambda u: set_credit_limit(u, acc, None))   # no limit: unlimited by default
    assert ledger.reasons(acc) == set()
    ledger.policy = CreditPolicy(no_limit_is_unlimited=False)
    ledger.run(lambda u: u.touch(acc))
    assert ledger.reasons(acc) == {"credit_limit"}


def test_manual_hold_only_released_by_admin_and_names_what_remains(ledger):
    acc = ledger.run(lambda u: make_account(u, "MAN", crm_hold=True))
    assert ledger.reasons(acc) == {"crm"}
    ledger.run(lambda u: place_manual_hold(u, acc, "disputed invoices", admin="ana"))
    assert ledger.reasons(acc) == {"crm", "manual"}
    with ledger.uow() as uow, pytest.raises(InvalidState, match="already"):
        place_manual_hold(uow, acc, "again", admin="ana")
    with ledger.uow() as uow, pytest.raises(ValidationError, match="note"):
        place_manual_hold(uow, acc, " ", admin="ana")
    with ledger.uow() as uow, pytest.raises(RuleViolation, match="only the CRM"):
        release_manual_hold(uow, acc, admin="ana", reason="crm")

    ledger.run(lambda u: u.touch(acc))        # billing re-evaluates: manual stays
    assert ledger.reasons(acc) == {"crm", "manual"}
    remaining = ledger.run(lambda u: release_manual_hold(u, acc, admin="bo"))
    assert remaining == ["crm"] and ledger.reasons(acc) == {"crm"}
    with ledger.uow() as uow, pytest.raises(InvalidState, match="on hold for: crm"):
        release_manual_hold(uow, acc, admin="bo")
    ledger.run(lambda u: set_crm_hold(u, acc, False))
    assert ledger.reasons(acc) == set()
    with ledger.engine.connect() as conn:
        actors = [(h["reason"], h["action"], h["actor"]) for h in history(conn, acc)]
        assert list_holds(conn) == []
        page = history_after(conn, 0, limit=3)
        assert [h["id"] for h in page + history_after(conn, page[-1]["id"])] == [1, 2, 3, 4]
    assert actors == [("crm", "placed", "crm:local"), ("manual", "placed", "admin:ana"),
                      ("manual", "lifted", "admin:bo"), ("crm", "lifted", "crm:local")]


def test_list_holds_filters_by_reason(ledger, clock):
    a = ledger.run(lambda u: make_account(u, "A", crm_hold=True))
    b = ledger.run(lambda u: make_account(u, "B", limit="0"))
    ledger.run(lambda u: post_invoice(u, b, 100, issue=clock.today,
                                      due=clock.today + timedelta(1)))
    with ledger.engine.connect() as conn:
        assert [h["account_id"] for h in list_holds(conn)] == [a, b]
        assert [h["account_id"] for h in list_holds(conn, reason="credit_limit")] == [b]
        with pytest.raises(ValidationError):
            list_holds(conn, reason="nope")


def test_the_hourly_job_reads_only_the_documents_past_due_and_grace(ledger, clock,
                                                                     monkeypatch):
    """The hourly job looks at the accounts with a document past due + grace; it reads those
    documents only, not every open one (a ledger holds a month of open invoices not due yet):
    3 accounts with an invoice not due yet, 1 with one due 5 days ago, grace 3 days."""
    from billing_core.service import credit_control

    ledger.policy = CreditPolicy(overdue_grace_days=3)
    today = clock.today
    fresh = [ledger.run(lambda u, n=n: make_account(u, f"FRESH{n}")) for n in range(3)]
    late = ledger.run(lambda u: make_account(u, "LATE"))
    for acc in fresh:
        ledger.run(lambda u, a=acc: post_invoice(u, a, 10000, issue=today,
                                                 due=today + timedelta(30)))
    ledger.run(lambda u: post_invoice(u, late, 5000, issue=today - timedelta(35),
                                      due=today - timedelta(5)))
    fetched: list[int] = []
    real = credit_control.open_debts

    def counted(*args, **kwargs):
        rows = real(*args, **kwargs)
        fetched.append(len(rows))
        return rows

    monkeypatch.setattr(credit_control, "open_debts", counted)
    # the posting already placed the hold (commit hook): the hourly job looks at it again
    assert _hourly(ledger) == {"accounts": 1, "placed": 0, "lifted": 0}
    assert ledger.reasons(late) == {"overdue"}
    assert all(ledger.reasons(a) == set() for a in fresh)
    assert fetched[0] == 1                      # the late invoice only, of the 4 open ones
