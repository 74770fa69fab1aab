"""Field maps, conversions, credentials and connection settings."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from connectors import fieldmap
from connectors.credentials import CredentialError, Secret
from connectors.cursor import StampTracker, decode
from connectors.fieldmap import FieldSpec, convert_in
from connectors.settings import SettingsError, load_connections, parse_connection
from connectors.values import parse_datetime

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", ["salesforce", "salesforce_cpq", "dynamics"])
def test_builtin_maps_cover_every_canonical_object(name: str) -> None:
    fmap = fieldmap.load(name)
    # plus the pushed-only documents (push_documents; never pulled)
    assert set(fmap.objects) - {"document", "document_file"} == {
        "account", "product", "price", "quote", "quote_line"}
    account = fmap.object("account")
    assert {"crm_id", "name", "credit_limit", "credit_hold", "modstamp"} <= set(account.fields)
    assert account.fields["billing_hold"].push and account.fields["credit_hold"].guarded
    assert fmap.object("quote").accepted_states


def test_unknown_object_and_bad_map_are_clear_errors() -> None:
    with pytest.raises(fieldmap.FieldMapError, match="'invoice' is not in"):
        fieldmap.load("salesforce").object("invoice")
    with pytest.raises(fieldmap.FieldMapError, match="missing 'key'"):
        fieldmap.build({"objects": {"x": {"crm_object": "X", "modstamp": "m"}}})


@pytest.mark.parametrize(("raw", "expected"), [
    ("2026-11-21T23:43:43.000+0000", datetime(2026, 11, 21, 23, 43, 43, tzinfo=UTC)),
    ("2026-11-21T18:43:43.000-0500", datetime(2026, 11, 21, 23, 43, 43, tzinfo=UTC)),
    ("2026-11-21T23:43:43Z", datetime(2026, 11, 21, 23, 43, 43, tzinfo=UTC)),
    ("2026-11-21T23:43:43", "2026-11-21T23:43:43"),  # no offset: never guessed as local time
    ("garbage", "garbage"),
    # every shape the pattern admits, read as is by the parser
    ("2026-11-22T05:13:43.5+05:30", datetime(2026, 11, 21, 23, 43, 43, 500000, tzinfo=UTC)),
    ("2026-11-22T05:13+0530", datetime(2026, 11, 21, 23, 43, tzinfo=UTC)),
    ("2026-11-21T23:43:43.123456789Z", datetime(2026, 11, 21, 23, 43, 43, 123456, tzinfo=UTC)),
    ("  2026-11-21T23:43:43.000+0000\n", datetime(2026, 11, 21, 23, 43, 43, tzinfo=UTC)),
    # and what it refuses stays raw, for the boundary to name
    ("2026-11-21 23:43:43Z", "2026-11-21 23:43:43Z"),
    ("20261121T234343Z", "20261121T234343Z"),
    ("2026-W47-6T23:43:43Z", "2026-W47-6T23:43:43Z"),
    ("2026-13-21T23:43:43Z", "2026-13-21T23:43:43Z"),
    ("2026-11-21T23:43:43+2400", "2026-11-21T23:43:43+2400"),
    ("0001-01-01T00:00:00+0100", "0001-01-01T00:00:00+0100"),
])
def test_timestamps_become_aware_utc_or_stay_raw(raw: str, expected: object) -> None:
    assert parse_datetime(raw) == expected


def test_value_conversions() -> None:
    dec, num = FieldSpec("x", "X", "decimal"), FieldSpec("n", "N", "int")
    assert convert_in(Decimal("0.1"), dec) == Decimal("0.1")
    assert convert_in(12, dec) == Decimal(12) and convert_in("bad", dec) == "bad"
    assert convert_in(Decimal("3.0"), num) == 3 and convert_in(Decimal("3.5"), num) == Decimal(
        "3.5")
    assert convert_in("2026-11-21", FieldSpec("d", "D", "date")) == date(2026, 11, 21)
    assert convert_in("yes", FieldSpec("b", "B", "bool")) == "yes"
    with pytest.raises(fieldmap.FieldMapError, match="cannot be sent exactly"):
        fieldmap.convert_out(Decimal("0.12345678901234567890"), dec)


def test_secret_hides_itself() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) + str(secret) + f"{secret}" + repr([secret])
    assert secret.reveal() == "hunter2"


def test_literal_secrets_in_config_are_refused() -> None:
    with pytest.raises(CredentialError, match="never written in the config"):
        parse_connection("c", {"crm": "salesforce", "url": "https://x",
                               "credentials": {"client_secret": "plain"}})


def test_settings_validation() -> None:
    with pytest.raises(SettingsError, match="c.pagesize = 5: unknown key"):
        parse_connection("c", {"crm": "salesforce", "url": "https://x", "pagesize": 5})
    with pytest.raises(SettingsError, match="tenant_id"):
        parse_connection("c", {"crm": "dynamics", "url": "https://x"})
    with pytest.raises(SettingsError, match="budget_share"):
        parse_connection("c", {"crm": "salesforce", "url": "https://x", "budget_share": 1.5})


def test_example_connections_file_loads() -> None:
    conns = load_connections(REPO / "config" / "connections.example.toml")
    assert {c.crm for c in conns.values()} == {"salesforce", "dynamics"}
    assert conns["sf_prod"].budget_share == 0.8 and conns["d365_prod"].page_size == 5000


def test_stamp_cursor_only_moves_forward_and_prunes_seen() -> None:
    from datetime import timedelta

    start = datetime(2026, 11, 21, 12, tzinfo=UTC)
    tracker = StampTracker(None, timedelta(seconds=60), start)
    assert tracker.admit("a", start - timedelta(hours=2))
    assert tracker.admit("b", start - timedelta(hours=1))
    assert not tracker.admit("b", start - timedelta(hours=1))
    assert tracker.admit("c", start - timedelta(hours=3))  # older row: handed out, no rewind
    state = decode(tracker.cursor())
    assert state["stamp"] == (start - timedelta(hours=1)).isoformat()
    assert list(state["seen"]) == ["b"]  # older ones are outside the overlap window
