"""The stored text of quotes and lines (``rec_to_json``, hashed as stored) is written field by
field; it must be exactly the text of the generic JSON encoder, or every stored quote and line
would count as changed on the next sync after an upgrade."""
from __future__ import annotations

import hashlib
import json
from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from sync import mapping
from sync.mapping import QuoteLineRec, QuoteRec

texts = st.text()          # any code point: non-ASCII, controls, lone surrogates, quotes
maybe_text = st.none() | texts
days = st.none() | st.dates()
decimals = st.decimals(allow_nan=False, allow_infinity=False)


def _reference(rec: object) -> str:
    """The generic encoder as ``rec_to_json`` used it before the fast path."""
    values = {k: getattr(rec, k) for k in rec.__dataclass_fields__}  # type: ignore[attr-defined]
    for key, default in mapping._WHEN_SET.items():
        if key in values and values[key] == default:
            del values[key]
    return json.JSONEncoder(sort_keys=True, default=mapping._jsonable).encode(values)


@settings(max_examples=400, deadline=None)
@given(st.builds(QuoteRec, crm_id=texts, account_crm_id=texts, status=texts,
                 revision=st.integers(0, 2**31 - 1), number=maybe_text, name=maybe_text,
                 start_date=days, kind=st.sampled_from(["new", "amendment", "renewal"]),
                 origin_quote=maybe_text, origin_ref=maybe_text, end_date=days))
def test_quote_text_is_the_generic_encoders(rec: QuoteRec) -> None:
    assert mapping.rec_to_json(rec) == _reference(rec)


@settings(max_examples=400, deadline=None)
@given(st.builds(QuoteLineRec, crm_id=texts, quote_crm_id=texts, product_crm_id=texts,
                 quantity=decimals, unit_price=st.none() | decimals, start_date=days,
                 end_date=days))
def test_line_text_is_the_generic_encoders(rec: QuoteLineRec) -> None:
    assert mapping.rec_to_json(rec) == _reference(rec)


def test_a_stored_line_keeps_its_hash() -> None:
    """The text (and so the content hash) of a line stored before the fast path."""
    rec = QuoteLineRec(crm_id="0QL1", quote_crm_id="0Q1", product_crm_id="01t1",
                       quantity=Decimal("3"), unit_price=Decimal("12.50"),
                       start_date=date(2026, 1, 1))
    text = mapping.rec_to_json(rec)
    assert text == ('{"crm_id": "0QL1", "product_crm_id": "01t1", "quantity": "3", '
                    '"quote_crm_id": "0Q1", "start_date": "2026-01-01", "unit_price": "12.50"}')
    assert mapping.text_hash(text) == hashlib.sha256(text.encode()).hexdigest()


def test_a_value_of_another_type_takes_the_generic_encoder() -> None:
    """A subclass (or any type the fast path does not know) is encoded as before."""
    class Day(date):
        pass

    rec = QuoteRec(crm_id="q", account_crm_id="a", status="s", revision=True, number=None,
                   name="é", start_date=Day(2026, 1, 2))
    assert mapping.rec_to_json(rec) == _reference(rec)
