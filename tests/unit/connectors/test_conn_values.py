"""CRM values in and out (connectors/values.py through the field map's types): every bad value
passes through raw, never raises and is never turned into text or a number; dates are strict,
Dataverse "User Local" dates are read and written in the connection's time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors import fieldmap
from connectors.fieldmap import FieldSpec, convert_in, convert_out
from connectors.settings import SettingsError, parse_connection

BERLIN = ZoneInfo("Europe/Berlin")


def spec(kind: str, behavior: str = "date_only", zone: Any = UTC, **kw: Any) -> FieldSpec:
    return FieldSpec("f", "F", kind, behavior=behavior, zone=zone, **kw)


# Values that no type may convert: objects, lists, booleans (except for bool), NaN, Infinity.
ANY_BAD: list[Any] = [{}, {"a": 1}, [], [1, 2], ["2026-01-01"], object()]
BAD: dict[str, list[Any]] = {
    "decimal": ANY_BAD + [
        True, False, "NaN", "nan", "sNaN", "Infinity", "-Infinity", "inf", Decimal("NaN"),
        Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity"), float("inf"), float("nan"),
        "1_000", " 1", "1 ", "1,5", "0x10", "", "1e", "--1", "12abc", "١٢", "½", "1e400e1"],
    "int": ANY_BAD + [
        True, False, "Infinity", "-Infinity", "NaN", Decimal("Infinity"), Decimal("-Infinity"),
        Decimal("NaN"), float("inf"), float("nan"), Decimal("1E+400"), "1e400", "1E+999999999",
        Decimal("1e19"), Decimal("-1e19"), Decimal("3.5"), "3.5", 3.5, "abc", "", "1_0", "٣"],
    "bool": ANY_BAD + [1, 0, "yes", "no", "1", "", Decimal(1), " true", "Truee"],
    "datetime": ANY_BAD + [
        True, 1_700_000_000, Decimal("1700000000"), "2026-11-21T23:43:43", "2026-11-21",
        "2026-W47-6T10:00:00+00:00", "20261121T234343Z", "2026-11-21 23:43:43Z", "garbage",
        "2026-11-21T23:43:43+25:00", "2026-13-21T23:43:43Z", "2026-11-21T23:43:43Zjunk",
        "9999-12-31T23:59:59-01:00", "２０２６-11-21T23:43:43Z"],
    "date": ANY_BAD + [
        True, 20261201, Decimal("2026"), "2026-12-01garbage", "2026-02-30", "2026-13-01",
        "20261201", "2026-W48-2", "2026-12-01T00:00:00Z", "2025-12-31T23:00:00Z",
        "2026-12-01T10:00:00+05:00", "1/1/2026", "01.01.2026", "", " 2026-12-01",
        "2026-12-1", "٢٠٢٦-١٢-٠١", datetime(2026, 12, 1, tzinfo=UTC)],
    "user_local": ANY_BAD + [
        True, 20261201, "2026-12-01garbage", "2025-12-31T23:00:00", "2025-12-31T23:00:00Zx",
        "2026-02-30", "1.1.2026", "", datetime(2026, 1, 1)],
    "str": ANY_BAD + [True, False, 1, Decimal("1.5"), 2.5],
    "choice": ANY_BAD + [True, False, Decimal("0.0"), 1.0, "9", None],
}
SPECS = {
    "decimal": spec("decimal"), "int": spec("int"), "bool": spec("bool"),
    "datetime": spec("datetime"), "date": spec("date"), "str": spec("str"),
    "user_local": spec("date", "user_local", BERLIN),
    "choice": spec("choice", choices={"0": "Draft", "1": "Active", "True": "Active"}),
}
CASES = [(kind, value) for kind, values in BAD.items() for value in values]


@pytest.mark.parametrize(("kind", "value"), CASES, ids=[f"{k}-{v!r}"[:60] for k, v in CASES])
def test_a_value_that_cannot_convert_passes_through_raw(kind: str, value: Any) -> None:
    assert convert_in(value, SPECS[kind]) is value


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("decimal", Decimal("0.1"), Decimal("0.1")), ("decimal", 12, Decimal(12)),
    ("decimal", "-12.50", Decimal("-12.50")), ("decimal", 1.5, Decimal("1.5")),
    ("decimal", Decimal("1E+400"), Decimal("1E+400")),  # finite: its range is the boundary's
    ("decimal", "1E+3", Decimal("1E+3")), ("decimal", ".5", Decimal("0.5")),
    ("int", 3, 3), ("int", Decimal("3.0"), 3), ("int", "42", 42), ("int", -7, -7),
    ("int", Decimal(2**63 - 1), 2**63 - 1), ("int", 10**30, 10**30),
    ("bool", True, True), ("bool", "true", True), ("bool", "False", False),
    ("datetime", "2026-11-21T23:43:43.000+0000", datetime(2026, 11, 21, 23, 43, 43, tzinfo=UTC)),
    ("datetime", "2026-11-21T18:43:43-05:00", datetime(2026, 11, 21, 23, 43, 43, tzinfo=UTC)),
    ("datetime", "2026-11-21T23:43Z", datetime(2026, 11, 21, 23, 43, tzinfo=UTC)),
    ("datetime", "2026-11-21T23:43:43.1234567Z",
     datetime(2026, 11, 21, 23, 43, 43, 123456, tzinfo=UTC)),
    ("date", "2026-12-01", date(2026, 12, 1)), ("date", date(2026, 12, 1), date(2026, 12, 1)),
    ("user_local", "2025-12-31T23:00:00Z", date(2026, 1, 1)),        # winter, UTC+1
    ("user_local", "2026-06-30T22:00:00Z", date(2026, 7, 1)),        # summer, UTC+2
    ("user_local", "2025-12-31T23:00:00.000+0000", date(2026, 1, 1)),
    ("user_local", "2026-01-01", date(2026, 1, 1)),                  # a bare date is a date
    ("user_local", datetime(2025, 12, 31, 23, tzinfo=UTC), date(2026, 1, 1)),
    ("choice", 0, "Draft"), ("choice", "1", "Active"),
    ("str", "Acme", "Acme"),
])
def test_good_values_convert(kind: str, value: Any, expected: Any) -> None:
    result = convert_in(value, SPECS[kind])
    assert result == expected and type(result) is type(expected)


def test_nothing_raises_for_extreme_instants() -> None:
    west = spec("date", "user_local", ZoneInfo("America/New_York"))
    assert convert_in("0001-01-01T00:00:00Z", west) == "0001-01-01T00:00:00Z"
    assert convert_in("9999-12-31T23:00:00-05:00", spec("datetime")) == (
        "9999-12-31T23:00:00-05:00")


def test_time_zone_independent_dates_are_read_in_utc() -> None:
    tzi = spec("date", "time_zone_independent", BERLIN)
    assert convert_in("2026-01-01T00:00:00Z", tzi) == date(2026, 1, 1)
    assert convert_out(date(2026, 1, 1), tzi) == "2026-01-01T00:00:00Z"


def test_dates_out_follow_the_column_behaviour() -> None:
    day = date(2026, 1, 1)
    assert convert_out(day, spec("date")) == "2026-01-01"
    assert convert_out(day, spec("date", "user_local", BERLIN)) == "2025-12-31T23:00:00Z"
    assert convert_out(date(2026, 7, 1), spec("date", "user_local", BERLIN)) == (
        "2026-06-30T22:00:00Z")
    assert convert_out(day, spec("date", "user_local")) == "2026-01-01T00:00:00Z"


ZONES = ["UTC", "Europe/Berlin", "America/Sao_Paulo", "Pacific/Kiritimati", "Pacific/Pago_Pago",
         "Asia/Kathmandu", "America/St_Johns", "Australia/Lord_Howe", "Asia/Beirut"]


@given(st.dates(date(1900, 1, 1), date(2100, 12, 31)), st.sampled_from(ZONES))
def test_user_local_dates_survive_the_round_trip(day: date, zone: str) -> None:
    """Written as the UTC instant of its local midnight, read back in the same zone: the same
    date, in zones from UTC-11 to UTC+14, with odd offsets and midnight DST changes."""
    field = spec("date", "user_local", ZoneInfo(zone))
    assert convert_in(convert_out(day, field), field) == day


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_non_finite_numbers_are_never_sent(value: Decimal) -> None:
    with pytest.raises(fieldmap.FieldMapError, match="not a finite number"):
        convert_out(value, spec("decimal"))


def test_datetimes_out_are_utc_z() -> None:
    moment = datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert convert_out(moment, spec("datetime")) == "2026-01-01T00:00:00Z"


# -- the field map ---------------------------------------------------------------------------
def _map(field: dict[str, Any]) -> fieldmap.FieldMap:
    return fieldmap.build({"objects": {"quote": {
        "crm_object": "quotes", "key": "quoteid", "modstamp": "modifiedon",
        "fields": {"start_date": field}}}})


def test_a_misspelt_field_key_is_refused_not_ignored() -> None:
    with pytest.raises(fieldmap.FieldMapError, match="unknown key 'behaviour'.*'behavior'"):
        _map({"field": "effectivefrom", "type": "date", "behaviour": "user_local"})


@pytest.mark.parametrize(("field", "message"), [
    ({"field": "x", "type": "date", "behavior": "local"}, "unknown behavior 'local'"),
    ({"field": "x", "type": "datetime", "behavior": "user_local"}, "type 'date' only"),
])
def test_behaviour_is_checked(field: dict[str, Any], message: str) -> None:
    with pytest.raises(fieldmap.FieldMapError, match=message):
        _map(field)


def test_dynamics_map_reads_user_local_dates_in_the_connection_zone() -> None:
    fmap = fieldmap.load("dynamics")
    quote, line = fmap.object("quote"), fmap.object("quote_line")
    assert quote.fields["start_date"].behavior == "user_local"
    assert line.fields["start_date"].behavior == "user_local"
    zoned = fmap.in_zone(BERLIN)
    row = {"quoteid": "q1", "effectivefrom": "2025-12-31T23:00:00Z"}
    assert fmap.object("quote").to_canonical(row)["start_date"] == date(2025, 12, 31)
    assert zoned.object("quote").to_canonical(row)["start_date"] == date(2026, 1, 1)
    # only user-local fields take the zone; the pushed invoice date stays a bare date
    assert zoned.object("account").fields["last_invoice_date"].zone is UTC
    assert zoned.object("account").to_crm({"last_invoice_date": date(2026, 1, 1)}) == {
        "new_lastinvoicedate": "2026-01-01"}


# -- the connection setting ------------------------------------------------------------------
def _dynamics(**over: Any) -> Any:
    return parse_connection("d365", {
        "crm": "dynamics", "url": "https://org.crm.dynamics.com", "tenant_id": "t",
        "credentials": {"client_id": "c", "client_secret": "env:S"}, **over})


def test_time_zone_defaults_to_utc_and_takes_iana_names() -> None:
    assert _dynamics().time_zone == "UTC"
    assert _dynamics(time_zone="Europe/Berlin").time_zone == "Europe/Berlin"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "CEST", "+01:00", "../etc/passwd",
                                  "/usr/share/zoneinfo/UTC", "Europe", "utc"])
def test_an_unknown_time_zone_is_refused_at_load(zone: str) -> None:
    with pytest.raises(SettingsError, match=r"connections\.d365\.time_zone = .*IANA"):
        _dynamics(time_zone=zone)


@pytest.mark.parametrize(("zone", "message"), [("", "must not be empty"),
                                               (1, "must be a string")])
def test_a_time_zone_of_the_wrong_kind_is_refused(zone: Any, message: str) -> None:
    with pytest.raises(SettingsError, match=rf"time_zone = .*{message}"):
        _dynamics(time_zone=zone)
