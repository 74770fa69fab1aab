"""Finance's terms of an account (payment terms, tax exemption, region) against the CRM sync,
on SQLite and PostgreSQL: what the CRM does not send is never reset by a CRM update."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from billing_core.adapters.tables import accounts
from billing_core.domain.errors import NotFound, ValidationError
from billing_core.service.accounts import AccountIn, update_terms, upsert_accounts


def _row(ledger, acc: int):
    with ledger.uow() as uow:
        return uow.conn.execute(select(accounts).where(accounts.c.id == acc)).mappings().one()


def _crm(name: str, region: str | None) -> AccountIn:
    """As the sync builds it: no bill cycle day, payment terms or exemption."""
    return AccountIn(name=name, currency="USD", ext_id="001A", ext_source="sf", country="US",
                     region=region)


def test_a_crm_update_keeps_finance_terms_and_sets_its_own_fields(ledger) -> None:
    with ledger.uow() as uow:
        [created] = upsert_accounts(uow, [_crm("Acme", "CA")])
        uow.commit()
    acc = created.account_id
    row = _row(ledger, acc)
    assert (row["bill_cycle_day"], row["payment_terms_days"], row["tax_exempt"]) == (1, 30, False)
    with ledger.uow() as uow:
        changes = update_terms(uow, acc, payment_terms_days=45, tax_exempt=True, region="NY")
        assert changes == {"payment_terms_days": 45, "tax_exempt": True, "region": "NY"}
        assert update_terms(uow, acc, payment_terms_days=45) == {}    # nothing changed
        uow.commit()
    with ledger.uow() as uow:
        [updated] = upsert_accounts(uow, [_crm("Acme Corp", "CA")])
        uow.commit()
    assert updated.changed
    row = _row(ledger, acc)
    # the CRM's name and region win; the terms it does not send stay finance's
    assert (row["name"], row["region"], row["payment_terms_days"], row["tax_exempt"]) == \
        ("Acme Corp", "CA", 45, True)


def test_bad_terms_name_the_field_and_write_nothing(ledger) -> None:
    acc = ledger.account()
    cases = [({"payment_terms_days": -1}, "payment_terms_days"),
             ({"payment_terms_days": True}, "payment_terms_days"),
             ({"region": "x" * 65}, "region"),
             ({"tax_exempt": "yes"}, "tax_exempt")]
    for kwargs, field in cases:
        with ledger.uow() as uow, pytest.raises(ValidationError) as info:
            update_terms(uow, acc, **kwargs)
        assert info.value.field == field, kwargs
    with ledger.uow() as uow, pytest.raises(NotFound):
        update_terms(uow, 999_999, payment_terms_days=10)
    row = _row(ledger, acc)
    assert (row["payment_terms_days"], row["region"], row["tax_exempt"]) == (30, None, False)
