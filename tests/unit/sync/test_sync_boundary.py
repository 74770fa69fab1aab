"""The sync boundary's small contracts: one error shape, one source reference format, one
handler per CRM object, and service functions that must exist when the sync is imported."""
from __future__ import annotations

import importlib.util

import pytest

import billing_core.service.pricing as pricing
from billing_core.domain.errors import LedgerError
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
