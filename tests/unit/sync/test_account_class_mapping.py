"""The optional canonical ``account_class`` of a CRM account (issue 16, item 4): lower-cased,
a class name or nothing; an option value left unmapped by the field's ``choices`` or a value
that is no class name is refused naming the field and the value (the record is quarantined)."""
from __future__ import annotations

import pytest

from connectors.fieldmap import FieldSpec, convert_in
from sync.mapping import Invalid, map_account

BASE = {"crm_id": "001A", "name": "Acme", "currency": "USD"}
SPEC = FieldSpec("account_class", "accountcategorycode", "choice",
                 choices={"1": "preferred", "2": "standard", "3": ""})


def test_a_class_is_lower_cased_and_blank_is_none() -> None:
    assert map_account({**BASE, "account_class": " Enterprise "}).account_class == "enterprise"
    assert map_account({**BASE, "account_class": ""}).account_class is None
    assert map_account(BASE).account_class is None


def test_choices_turn_option_values_into_classes() -> None:
    assert map_account({**BASE, "account_class": convert_in(1, SPEC)}).account_class \
        == "preferred"
    assert map_account({**BASE, "account_class": convert_in(3, SPEC)}).account_class is None


@pytest.mark.parametrize(("value", "problem"), [
    (4, "is an option value without a class"),
    ("Customer - Direct", "must be a class name"),
    ("x" * 65, "must be a class name"),
])
def test_a_value_that_is_no_class_name_is_refused(value: object, problem: str) -> None:
    with pytest.raises(Invalid) as refused:
        map_account({**BASE, "account_class": convert_in(value, SPEC)})
    assert (refused.value.field, refused.value.value) == ("account_class", value)
    assert problem in refused.value.problem
