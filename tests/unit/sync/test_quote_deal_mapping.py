"""How a quote names its deal (issue 14, items 1-3): the mapped type, the origin quote, the
cancellation dates. Pure mapping, no I/O."""
from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from sync.mapping import (
    Invalid,
    line_from_json,
    map_quote,
    map_quote_line,
    quote_from_json,
    rec_to_json,
    revive,
)

BASE = {"crm_id": "a0Q1", "account_crm_id": "001A", "status": "Accepted"}


def test_a_quote_without_a_type_is_a_new_deal_and_is_stored_as_before() -> None:
    q = map_quote(BASE)
    assert (q.kind, q.origin_quote, q.origin_ref, q.end_date) == ("new", None, None, None)
    # stored without the new keys: quotes synced before keep their content hash
    assert rec_to_json(q) == ('{"account_crm_id": "001A", "crm_id": "a0Q1", "name": null, '
                              '"number": null, "revision": 1, "start_date": null, '
                              '"status": "Accepted"}')


@pytest.mark.parametrize("raw,kind", [("Quote", "new"), ("Amendment", "amendment"),
                                      ("Renewal", "renewal"), ("renewal", "renewal"),
                                      ("new", "new"), ("", "new"), (None, "new")])
def test_the_type_names_the_kind(raw: str | None, kind: str) -> None:
    assert map_quote({**BASE, "type": raw}).kind == kind


def test_an_unknown_type_is_refused_naming_the_field() -> None:
    with pytest.raises(Invalid) as err:
        map_quote({**BASE, "type": "Barter"})
    assert (err.value.field, err.value.value) == ("type", "Barter")
    with pytest.raises(Invalid) as err:         # an unmapped Dataverse option value
        map_quote({**BASE, "type": 100000009})
    assert err.value.field == "type"


def test_an_amendment_takes_its_origin_from_the_amended_contract() -> None:
    q = map_quote({**BASE, "type": "Amendment", "origin_quote": "a0Q0",
                   "origin_contract": "800C", "renewed_quote": "a0QX"})
    assert (q.kind, q.origin_quote, q.origin_ref) == ("amendment", "a0Q0", "800C")


def test_a_renewal_prefers_the_renewed_contract_and_falls_back_to_the_origin() -> None:
    q = map_quote({**BASE, "type": "Renewal", "origin_quote": "a0Q0", "origin_contract": "800C",
                   "renewed_quote": "a0Q5", "renewed_contract": "800R"})
    assert (q.origin_quote, q.origin_ref) == ("a0Q5", "800R")
    q = map_quote({**BASE, "type": "Renewal", "origin_quote": "a0Q0", "origin_contract": "800C",
                   "renewed_quote": None, "renewed_contract": None})
    assert (q.origin_quote, q.origin_ref) == ("a0Q0", "800C")
    # a renewed contract without a quote is still named in the reason
    q = map_quote({**BASE, "type": "Renewal", "renewed_contract": "800R"})
    assert (q.origin_quote, q.origin_ref) == (None, "800R")


def test_a_new_quote_keeps_no_origin() -> None:
    q = map_quote({**BASE, "type": "Quote", "origin_quote": "a0Q0", "origin_contract": "800C"})
    assert (q.origin_quote, q.origin_ref) == (None, None)


def test_dataverse_origins_are_guids() -> None:
    guid = "5f1c2b8e-0000-4000-8000-000000000001"
    rec = {"crm_id": guid, "account_crm_id": guid, "status": "Won", "type": "renewal",
           "origin_quote": "not-a-guid"}
    with pytest.raises(Invalid) as err:
        map_quote(rec, guid=True)
    assert err.value.field == "origin_quote"
    assert map_quote({**rec, "origin_quote": guid}, guid=True).origin_quote == guid


def test_end_dates_and_the_stored_round_trip() -> None:
    q = map_quote({**BASE, "type": "Amendment", "origin_quote": "a0Q0",
                   "end_date": date(2027, 2, 15), "start_date": date(2027, 1, 20)})
    assert quote_from_json(rec_to_json(q)) == q
    line = map_quote_line({"crm_id": "L", "quote_crm_id": "a0Q1", "product_crm_id": "01t",
                           "quantity": Decimal(0), "end_date": date(2027, 2, 15)})
    assert line_from_json(rec_to_json(line)) == line
    with pytest.raises(Invalid) as err:
        map_quote({**BASE, "end_date": "15/02/2027"})
    assert err.value.field == "end_date"


def test_a_stored_quote_maps_back_to_itself() -> None:
    """What a hand-off refusal quarantines is the stored QuoteRec (``kind``, ``origin_ref``,
    no ``type``); ``quarantine retry`` maps it again: an amendment must stay an amendment of
    the same origin, never become a new deal (a second order, billed twice)."""
    for raw in ({**BASE, "type": "Amendment", "origin_quote": "a0Q0", "origin_contract": "800C",
                 "start_date": date(2027, 1, 20), "end_date": date(2027, 3, 1)},
                {**BASE, "type": "Renewal", "renewed_quote": "a0Q5",
                 "renewed_contract": "800R"},
                {**BASE, "type": "Amendment", "origin_contract": "800C"},
                BASE):
        q = map_quote(raw)
        stored = revive(json.loads(rec_to_json(q)))
        assert map_quote(stored) == q


def test_the_primary_flag_is_read_and_stored_only_when_false() -> None:
    """CPQ's SBQQ__Primary__c (``primary``): a quote without it, or primary, is stored as
    before (same content hash); one that is not primary keeps that through its stored JSON
    (what a quarantine retry reads back); anything but a boolean is refused naming it."""
    assert map_quote(BASE).primary is True
    assert rec_to_json(map_quote({**BASE, "primary": True})) == rec_to_json(map_quote(BASE))
    alternative = map_quote({**BASE, "primary": False})
    assert alternative.primary is False
    assert json.loads(rec_to_json(alternative))["primary"] is False
    assert quote_from_json(rec_to_json(alternative)).primary is False
    with pytest.raises(Invalid) as refused:
        map_quote({**BASE, "primary": "no"})
    assert refused.value.field == "primary"
