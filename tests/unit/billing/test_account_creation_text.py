"""A new row's audit text, written field by field (``audit.creation``), is exactly the
generic encoder's (``audit._creation_text``): any text (lone surrogates, controls,
non-ASCII), numbers, true/false, None left out; any other value type takes the generic
encoder itself."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from billing_core.service import audit

VALUES = st.one_of(st.none(), st.text(), st.booleans(), st.integers(),
                   st.integers(min_value=-2**70, max_value=2**70))


@given(st.dictionaries(st.text(), VALUES))
def test_the_same_text_as_the_generic_encoder(values: dict[str, Any]) -> None:
    assert audit.creation(values) == audit._creation_text(values)


def test_other_types_take_the_generic_encoder() -> None:
    values = {"ext_id": "A1", "limit": Decimal("10.50"), "flag": True, "gone": None}
    assert audit.creation(values) == audit._creation_text(values)
    assert audit.creation({}) == audit._creation_text({}) == "{}"
    assert audit.creation({"a": None}) == "{}"
    assert audit.creation({"name": "Zürich\u0000"}) == audit._creation_text(
        {"name": "Zürich\u0000"})
