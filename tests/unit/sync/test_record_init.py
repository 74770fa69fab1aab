"""The quick ``__init__`` (``billing_core.domain.records.quick_init``) of the mapped records
and of the accounts the sync upserts is the dataclass's own in all but speed: the same
parameters and defaults, frozen, equal, hashable, replaceable."""
from __future__ import annotations

import dataclasses
import inspect
from datetime import date
from decimal import Decimal

import pytest

from billing_core.domain.records import quick_init
from billing_core.service.accounts import AccountIn, UpsertResult
from sync import mapping
from sync.mapping import AccountRec, PriceRec, ProductRec, QuoteLineRec, QuoteRec

RECORDS = (AccountRec, ProductRec, PriceRec, QuoteRec, QuoteLineRec, AccountIn, UpsertResult)


@pytest.mark.parametrize("cls", RECORDS)
def test_the_same_parameters_and_defaults_as_the_dataclass_init(cls: type) -> None:
    fields = dataclasses.fields(cls)
    expected = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                  default=inspect.Parameter.empty
                                  if f.default is dataclasses.MISSING else f.default)
                for f in fields]
    got = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [(p.name, p.kind, p.default) for p in got] == \
        [(p.name, p.kind, p.default) for p in expected]
    assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"


def test_records_are_frozen_equal_hashable_and_replaceable() -> None:
    line = QuoteLineRec("L1", "Q1", "P1", Decimal("2.0"), None, date(2026, 1, 1))
    assert line.end_date is None and vars(line)["quantity"] == Decimal("2.0")
    same = QuoteLineRec(crm_id="L1", quote_crm_id="Q1", product_crm_id="P1",
                        quantity=Decimal("2.0"), unit_price=None, start_date=date(2026, 1, 1),
                        end_date=None)
    assert line == same and hash(line) == hash(same) and len({line, same}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        line.crm_id = "L2"  # type: ignore[misc]
    assert dataclasses.replace(line, crm_id="L2").crm_id == "L2"
    assert repr(line).startswith("QuoteLineRec(crm_id='L1'")
    quote = mapping.quote_from_json(mapping.rec_to_json(QuoteRec(
        "Q1", "A1", "Accepted", 2, "N-1", None, None, kind="renewal", origin_quote="Q0")))
    assert (quote.kind, quote.origin_quote, quote.origin_ref) == ("renewal", "Q0", None)
    with pytest.raises(TypeError):
        QuoteLineRec("L1", "Q1")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        QuoteLineRec("L1", "Q1", "P1", 1, None, None, nothing=1)  # type: ignore[call-arg]


def test_a_field_with_a_factory_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class WithFactory:
        items: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="only plain fields"):
        quick_init(WithFactory)
