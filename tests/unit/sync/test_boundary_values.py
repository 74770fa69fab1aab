"""The sync boundary's value checks and the quarantine's safe display (pure functions)."""
from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from sync import boundary
from sync.boundary import Invalid
from sync.mapping import map_account, map_quote, map_quote_line, record_json

GUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def test_shown_keeps_plain_text_and_escapes_and_cuts_the_rest() -> None:
    assert boundary.shown("lots") == "lots"
    assert boundary.shown("a\x00b") == "'a\\x00b'"
    long = boundary.shown("abc" * 4000)
    assert long.endswith("…' (12,000 characters)") and len(long) < 250
    assert boundary.shown(Decimal("1E+30")) == "1E+30"
    assert boundary.shown(True) == "True" and boundary.shown({"a": 1}) == "{'a': 1}"
    assert "\x00" not in boundary.shown(["\x00"])


def test_record_json_escapes_nul_and_surrogates_and_never_raises() -> None:
    text = record_json({"crm_id": "A\x00", "name": "\ud800", "x": object(),
                        "n": Decimal("1.5"), "d": date(2026, 1, 1)})
    assert "\x00" not in text and "\\u0000" in text and "\\ud800" in text
    text.encode("utf-8")


@pytest.mark.parametrize(("value", "ok"), [
    (Decimal("1.1234567890"), True), (Decimal("1.12345678900000"), True),
    (Decimal("1.12345678901"), False), (Decimal("1E+3"), True), (Decimal("0E-20"), True)])
def test_decimal_places(value: Decimal, ok: bool) -> None:
    rec = {"q": value}
    if ok:
        assert boundary.decimal(rec, "q") == value
    else:
        with pytest.raises(Invalid, match="decimal places"):
            boundary.decimal(rec, "q")


def test_ids_are_guids_on_dataverse_only() -> None:
    assert boundary.crm_id({"crm_id": "001ABC"}) == "001ABC"
    assert boundary.crm_id({"crm_id": GUID}, guid=True) == GUID
    with pytest.raises(Invalid, match="GUID"):
        boundary.crm_id({"crm_id": "001ABC"}, guid=True)
    for bad in (" A1", "A 1", "", "a" * 65, True, ["a"], "a\x00"):
        with pytest.raises(Invalid):
            boundary.crm_id({"crm_id": bad})
    assert not boundary.usable_id("a\x00") and boundary.usable_id("A1")


def test_the_mapping_refuses_what_the_connectors_pass_through_raw() -> None:
    base = {"crm_id": "A1", "name": "Acme", "currency": "USD"}
    with pytest.raises(Invalid, match="not text"):
        map_account({**base, "name": True})
    with pytest.raises(Invalid, match="longer than 255"):
        map_account({**base, "name": "x" * 256})
    with pytest.raises(Invalid, match="time zone"):
        map_account({**base, "modstamp": "2026-11-01T12:00:00"})
    assert map_account({**base, "modstamp": datetime(2026, 1, 1, tzinfo=UTC)}).name == "Acme"
    quote = {"crm_id": "Q1", "account_crm_id": "A1"}
    for revision in (10**12, "Infinity", float("nan"), True):
        with pytest.raises(Invalid) as caught:
            map_quote({**quote, "revision": revision})
        assert caught.value.field == "revision"
    assert map_quote({**quote, "revision": Decimal(3)}).revision == 3
    with pytest.raises(Invalid, match="not a date"):
        map_quote({**quote, "start_date": "2026-12-01garbage"})
    line = {"crm_id": "L1", "quote_crm_id": "Q1", "product_crm_id": "P1"}
    with pytest.raises(Invalid, match="larger than"):
        map_quote_line({**line, "quantity": Decimal(9_999_999_999_999_999)})
