"""A new account's audit text, written field by field (``accounts._creation``), is exactly
``audit.creation``'s: any text (lone surrogates, controls, non-ASCII), numbers, true/false,
None left out; any other value type takes ``audit.creation`` itself."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from billing_core.service import audit
from billing_core.service.accounts import _creation

VALUES = st.one_of(st.none(), st.text(), st.booleans(), st.integers(),
                   st.integers(min_value=-2**70, max_value=2**70))


@given(st.dictionaries(st.text(), VALUES))
def test_the_same_text_as_audit_creation(values: dict[str, Any]) -> None:
    assert _creation(values) == audit.creation(values)


def test_other_types_take_audit_creation() -> None:
    values = {"ext_id": "A1", "limit": Decimal("10.50"), "flag": True, "gone": None}
    assert _creation(values) == audit.creation(values)
    assert _creation({}) == audit.creation({}) == "{}"
    assert _creation({"a": None}) == "{}"
    assert _creation({"name": "Zürich\u0000"}) == audit.creation({"name": "Zürich\u0000"})
