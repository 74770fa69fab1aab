"""The sync boundary's small contracts: one error shape, one source reference format, one
handler per CRM object, and service functions that must exist when the sync is imported."""
from __future__ import annotations

import importlib.util
from decimal import Decimal

import pytest

import billing_core.service.pricing as pricing
from billing_core.domain.errors import LedgerError
from sync import boundary
from sync.handlers import HANDLERS
from sync.mapping import OBJECTS, Invalid
from sync.refs import SourceRef, parse_source_ref, source_ref
from sync.states import PLACED, HandoffState


def test_invalid_has_the_ledger_error_shape():
    err = Invalid("credit_limit", -5, "must not be negative")
    assert isinstance(err, LedgerError)
    assert (err.field, err.value, err.problem) == ("credit_limit", -5, "must not be negative")
    assert err.as_dict()["code"] == "invalid_record"


@pytest.mark.parametrize("connection, quote_id, revision", [
    ("sf", "0Q01x000000abcDEF", 1), ("d365", "6b3e0c1a-0000-4000-8000-000000000001", 12),
    ("sf", "odd:id:rev", 3)])
def test_source_ref_parses_back_to_what_built_it(connection, quote_id, revision):
    ref = source_ref(connection, quote_id, revision)
    assert parse_source_ref(ref) == SourceRef(connection, quote_id, revision)


@pytest.mark.parametrize("ref", ["manual-1", "sf:Q1", "sf::rev1", ":Q1:rev1", "sf:Q1:revX"])
def test_a_reference_not_made_by_the_hand_off_is_refused_by_name(ref):
    with pytest.raises(ValueError, match="source_ref"):
        parse_source_ref(ref)


def test_hand_off_states_are_the_database_strings():
    assert [str(s) for s in HandoffState] == ["waiting", "done", "reversed_in_crm", "withdrawn"]
    assert "done" in PLACED and "reversed_in_crm" in PLACED and "waiting" not in PLACED


def test_every_synchronised_object_has_its_handler():
    assert set(HANDLERS) == set(OBJECTS)
    assert all(HANDLERS[name].obj == name for name in HANDLERS)


def test_a_missing_service_function_fails_when_the_sync_is_imported(monkeypatch):
    """The product handler used to probe ``getattr(pricing, "update_product", None)`` and
    skip the write when it was missing; now the import itself fails."""
    monkeypatch.delattr(pricing, "update_product")
    spec = importlib.util.find_spec("sync.handlers.product")
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)          # a copy: the real module stays
    with pytest.raises(ImportError, match="update_product"):
        spec.loader.exec_module(fresh)


# 15-character Salesforce ids and their 18-character forms, the suffix worked out by the
# documented algorithm: per 5-character chunk, a 1 bit for each upper-case letter (the chunk's
# first character the lowest bit), the chunk's number an index into A-Z0-5.
SALESFORCE_IDS = [("a0D30000001n7Pi", "EAI"),   # chunks 00100 / 00000 / 01000 read backwards
                  ("a01M00000062mPg", "IAI"), ("001M000000qfPyS", "IAU"),
                  ("a0FE000000D6r3F", "MAR"), ("0F9E000000092w2", "KAA"),
                  ("aaaaaaaaaaaaaaa", "AAA"), ("AbCdEfGhIjKlMnO", "VKV"),
                  ("aBcDEfgHIJKLMNO", "025"), ("ZZZZZZZZZZZZZZZ", "555"),
                  ("70130000001tcyI", "AAQ"), ("00558000001N0Ke", "AAK")]


@pytest.mark.parametrize(("short", "suffix"), SALESFORCE_IDS)
def test_a_salesforce_id_in_either_form_has_one_form(short, suffix):
    full = short + suffix
    assert boundary.salesforce_suffix(short) == suffix
    assert boundary.same_id(short) == full
    assert boundary.same_id(full) == full
    # the 18-character form is case-insensitive: the suffix says the case of the 15
    assert boundary.same_id(full.lower()) == full
    assert boundary.same_id(full.upper()) == full
    assert boundary.crm_id({"quote_crm_id": short}, "quote_crm_id") == full


def test_two_15_character_ids_that_differ_by_case_stay_two_records():
    assert boundary.same_id("a0D30000001n7Pi") != boundary.same_id("a0D30000001N7Pi")


@pytest.mark.parametrize("value", ["Q1", "ACC-0001", "a0D30000001n7PiXXX", "0123456789012345",
                                   "a0D30000001n7P", 15, None, {"Id": "a0D30000001n7Pi"}])
def test_what_is_not_a_salesforce_id_or_a_guid_is_kept_as_it_is(value):
    assert boundary.same_id(value) == value


def test_a_guid_has_one_form_in_lower_case():
    guid = "6F1C2A9E-3B4D-4E5F-8A7B-1C2D3E4F5A6B"
    assert boundary.same_id(guid) == guid.lower()
    assert boundary.crm_id({"crm_id": guid}, guid=True) == guid.lower()


def test_one_form_puts_every_id_field_of_a_record_in_its_form():
    record = {"crm_id": "L1", "quote_crm_id": "a0D30000001n7Pi",
              "product_crm_id": "a01M00000062mPgiai", "name": "a0D30000001n7Pi"}
    assert boundary.one_form(record) == {**record, "quote_crm_id": "a0D30000001n7PiEAI",
                                         "product_crm_id": "a01M00000062mPgIAI"}
    same = {"crm_id": "L1", "quote_crm_id": "a0D30000001n7PiEAI"}
    assert boundary.one_form(same) is same


@pytest.mark.parametrize(("value", "ids"), [
    ({"attributes": {"type": "Quote", "url": "/services/data/v60.0/sobjects/Quote/"
                                             "a0D30000001n7PiEAI"}, "Id": "a0D30000001n7Pi"},
     {"a0D30000001n7PiEAI"}),
    ({"quoteid": "6F1C2A9E-3B4D-4E5F-8A7B-1C2D3E4F5A6B"},
     {"6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b"}),
    (" a0D30000001n7Pi ", {"a0D30000001n7PiEAI"}),
    (["{6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b}"], {"6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b"}),
    (12345, set()), (True, set()), ({}, set()), ("no id here", set()),
])
def test_ids_within_a_reference_that_is_not_an_id(value, ids):
    assert boundary.ids_within(value) == ids


def test_a_quote_line_whose_quote_reference_is_an_object_is_refused_naming_it():
    from sync.mapping import map_quote_line

    ref = {"quoteid": "6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b"}
    with pytest.raises(boundary.Invalid) as refused:
        map_quote_line({"crm_id": "L1", "quote_crm_id": ref, "product_crm_id": "P1",
                        "quantity": Decimal("-1")})
    assert (refused.value.field, refused.value.value) == ("quote_crm_id", ref)
