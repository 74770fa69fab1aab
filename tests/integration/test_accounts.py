import pytest

from billing_core.domain.errors import Duplicate, InvalidAmount, UnknownCurrency, ValidationError
from billing_core.service.accounts import (
    AccountIn,
    create_account,
    get_account,
    resolve_account,
    set_credit_limit,
)
from billing_core.service.numbering import take_number, take_numbers


def test_create_and_resolve_account(uow):
    acc = create_account(uow, AccountIn(name="Acme", currency="usd", ext_id="001A",
                                        credit_limit="1000.00", country="us"))
    row = get_account(uow.conn, acc)
    assert (row["currency"], row["country"], row["credit_limit_minor"]) == ("USD", "US", 100000)
    assert resolve_account(uow.conn, "001A")["id"] == acc
    assert resolve_account(uow.conn, str(acc))["id"] == acc
    assert acc in uow.touched_accounts


@pytest.mark.parametrize("kwargs,error,field", [
    ({"currency": "XYZ"}, UnknownCurrency, "currency"),
    ({"credit_limit": "-5"}, InvalidAmount, "credit_limit"),
    ({"credit_limit": "abc"}, InvalidAmount, "credit_limit"),
    ({"bill_cycle_day": 32}, ValidationError, "bill_cycle_day"),
    ({"name": " "}, ValidationError, "name"),
])
def test_bad_account_input_names_the_field_and_writes_nothing(uow, kwargs, error, field):
    base = {"name": "Acme", "currency": "USD", "ext_id": "X1"}
    with pytest.raises(error) as info:
        create_account(uow, AccountIn(**{**base, **kwargs}))
    assert info.value.field == field


def test_duplicate_external_reference(uow):
    create_account(uow, AccountIn(name="A", currency="EUR", ext_id="D1"))
    with pytest.raises(Duplicate):
        create_account(uow, AccountIn(name="B", currency="EUR", ext_id="D1"))


def test_set_limit_validates_against_account_currency(uow):
    acc = create_account(uow, AccountIn(name="Yen", currency="JPY", ext_id="J1"))
    with pytest.raises(InvalidAmount, match="more decimals"):
        set_credit_limit(uow, acc, "10.5")
    set_credit_limit(uow, acc, "1000")
    assert get_account(uow.conn, acc)["credit_limit_minor"] == 1000


def test_numbers_are_consecutive_and_rolled_back_numbers_are_reused(engine):
    from billing_core.adapters.db import UnitOfWork

    with UnitOfWork(engine) as uow:
        assert take_number(uow.conn, "INV") == "INV-000001"
        assert take_numbers(uow.conn, "INV", 2) == ["INV-000002", "INV-000003"]
        uow.commit()
    with UnitOfWork(engine) as uow:
        assert take_number(uow.conn, "INV") == "INV-000004"
        # not committed: rolled back on exit
    with UnitOfWork(engine) as uow:
        assert take_number(uow.conn, "INV") == "INV-000004"


def test_a_database_error_while_opening_a_series_is_raised_not_retried_forever():
    """Regression: any exception on the first insert of a series retried it recursively."""
    from sqlalchemy.exc import OperationalError

    class NoSeriesYet:
        def execute(self, stmt, *args):
            if stmt.is_dml and stmt.table.name == "number_sequences" and stmt.is_insert:
                raise OperationalError("INSERT", {}, Exception("disk I/O error"))
            return self

        def first(self):
            return None

        def begin_nested(self):
            import contextlib
            return contextlib.nullcontext()

    with pytest.raises(OperationalError, match="disk I/O error"):
        take_numbers(NoSeriesYet(), "INV")
