"""``read_facts(skip_clear=True)``, as the commit hook reads a bill-run chunk: it leaves out
exactly the accounts nothing can hold (no CRM flag, no reason carried, no limit that applies,
nothing overdue) and gives the others the same facts as a full read, so every decision is
the one ``credit.decide`` takes on the full facts.

Accounts (payment terms 30 days, the clock on 2 March 2026, grace 0):
- ``plain``: no limit, one invoice due 1 April (not overdue): clear, left out.
- ``void_late``: an invoice due 1 February, voided: not open, clear.
- ``paid_late``: an invoice due 1 February, fully paid: nothing open, clear.
- ``late``: an invoice of 40.00 due 1 February, unpaid: overdue, kept (``overdue`` placed).
- ``flag``: the CRM's hold flag: kept (``crm``).
- ``manual``: a manual hold: kept (finance's reason is carried).
- ``limited``: a limit of 500.00 under it (exposure 0): kept; a limit applies.
"""
from __future__ import annotations

from datetime import date

from credit_helpers import Ledger, make_account, post_invoice
from sqlalchemy import select, update

from billing_core.adapters.tables import accounts, invoices
from billing_core.domain import credit
from billing_core.domain.credit import CreditPolicy
from billing_core.service.credit_control import DECISION_COLUMNS, read_facts
from billing_core.service.holds import place_manual_hold


def _seed(ledger: Ledger) -> dict[str, int]:
    with ledger.tx() as uow:
        ids = {name: make_account(uow, name.upper(), **kw) for name, kw in (
            ("plain", {}), ("void_late", {}), ("paid_late", {}), ("late", {}),
            ("flag", {"crm_hold": True}), ("manual", {}), ("limited", {"limit": "500.00"}))}
    with ledger.tx() as uow:
        post_invoice(uow, ids["plain"], 1000, issue=date(2026, 3, 2), due=date(2026, 4, 1))
        void = post_invoice(uow, ids["void_late"], 1000, issue=date(2026, 1, 2),
                            due=date(2026, 2, 1))
        uow.conn.execute(update(invoices).where(invoices.c.id == void).values(status="void"))
        paid = post_invoice(uow, ids["paid_late"], 4000, issue=date(2026, 1, 2),
                            due=date(2026, 2, 1))
        uow.conn.execute(update(invoices).where(invoices.c.id == paid).values(applied_minor=4000))
        post_invoice(uow, ids["late"], 4000, issue=date(2026, 1, 2), due=date(2026, 2, 1))
        place_manual_hold(uow, ids["manual"], "finance says wait", admin="cli:test")
    return ids


def test_the_hook_reads_the_facts_of_exactly_the_accounts_something_can_hold(
        ledger: Ledger) -> None:
    ids = _seed(ledger)
    policy, today = CreditPolicy(), ledger.clock.today
    with ledger.engine.connect() as conn:
        rows = {int(r["id"]): r for r in conn.execute(
            select(*DECISION_COLUMNS).where(accounts.c.id.in_(ids.values()))).mappings()}
        full = read_facts(conn, rows, today, policy)
        kept = read_facts(conn, rows, today, policy, skip_clear=True)

    names = {v: k for k, v in ids.items()}
    assert sorted(names[a] for a in kept) == ["flag", "late", "limited", "manual"]
    for account_id, facts in kept.items():
        assert facts == full[account_id]
    for account_id, facts in full.items():
        decision = credit.decide(facts, policy, today)
        if account_id not in kept:      # left out: decided as "no reason, no change"
            assert (dict(decision.place), dict(decision.lift), decision.reasons) == ({}, {}, ())
    assert [d.due_date for d in full[ids["late"]].debts] == [date(2026, 2, 1)]
    assert full[ids["plain"]].debts == ()      # not due yet: not read at all


def test_the_commit_hook_still_places_and_keeps_every_reason(ledger: Ledger) -> None:
    """The same accounts touched in one unit of work (as a bill run's chunk touches its
    accounts): the reasons after its commit are the ones the rules give."""
    ids = _seed(ledger)
    with ledger.tx() as uow:
        for account_id in ids.values():
            uow.touch(account_id)
    assert {name: ledger.reasons(a) for name, a in ids.items()} == {
        "plain": set(), "void_late": set(), "paid_late": set(), "late": {"overdue"},
        "flag": {"crm"}, "manual": {"manual"}, "limited": set()}
