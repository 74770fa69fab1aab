"""Field maps: which CRM object and field each canonical name (docs/FIELDS.md) comes from.

A map is TOML: `crm = "salesforce"`, then per canonical object `[objects.NAME]` with
`crm_object` (sObject / entity set), `key`, `modstamp`, optional `logical_name` (Dataverse),
`change_tracking` (Dataverse), `accepted_states` (quotes), and `[objects.NAME.fields]` mapping a
canonical field to `"CrmField"` or `{ field = "...", type = "...", push = true, guarded = true,
choices = { "2" = "Won" }, behavior = "user_local" }`. Types: str (default), decimal, int, bool,
datetime, date, choice, currency_ref. A Salesforce field may be a relationship path
(`SBQQ__MasterContract__r.SBQQ__Quote__c`): it is selected as written and read from the nested
record SOQL answers with (:func:`follow`); pull only. `behavior` (dates only) is the Dataverse column's
date behaviour: "date_only" (default: served as `YYYY-MM-DD`), "user_local" (served as the UTC
instant of a local midnight, read in the connection's `time_zone`) or "time_zone_independent".

Rules kept here:
- Built-in maps live in config/fieldmaps/; a user's map is merged over one entry at a time
  (an object key or a single field), so overriding one field keeps all the others. A field
  table with an unknown key (`behaviour`, `tpye`) is refused, naming it: ignoring it would
  silently read the field the default way.
- Conversion out of the CRM (values.py): numbers become finite `Decimal` (never float),
  datetimes aware UTC (a timestamp without an offset is *not* guessed: it passes through raw),
  dates strict, booleans stay booleans. A value that cannot be converted passes through raw for
  the sync engine to quarantine; converting never raises.
- Conversion into the CRM: `Decimal` is sent as a JSON number only when it is finite and
  survives the trip exactly; a user-local date is sent as the UTC instant of its local midnight;
  `guarded` fields are written with `If-Match` (Dataverse) because billing decides them from CRM
  state; `push` fields are the ones billing owns.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from connectors import values
from connectors.values import parse_datetime

TYPES = frozenset({"str", "decimal", "int", "bool", "datetime", "date", "choice", "currency_ref"})
SPEC_KEYS = ("field", "type", "push", "guarded", "choices", "behavior")


class FieldMapError(ValueError):
    """The map itself is malformed (not: a CRM lacks a field; that is for `check()`)."""


@dataclass(frozen=True)
class FieldSpec:
    canonical: str
    crm: str
    type: str = "str"
    push: bool = False
    guarded: bool = False
    choices: Mapping[str, Any] = field(default_factory=dict)
    behavior: str = values.DATE_ONLY
    #: The zone a user-local date is read and written in: the connection's (`FieldMap.in_zone`).
    zone: tzinfo = UTC


@dataclass(frozen=True)
class ObjectMap:
    name: str
    crm_object: str
    key: str
    modstamp: str
    fields: Mapping[str, FieldSpec]
    logical_name: str | None = None
    change_tracking: bool = False
    accepted_states: frozenset[str] = frozenset()

    @property
    def pull_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields.values() if not f.push]

    @cached_property
    def _pulled(self) -> tuple[tuple[str, str, bool, FieldSpec], ...]:
        """``pull_fields`` as (CRM name, canonical name, a relationship path?, spec), worked
        out once per map rather than once per record read."""
        return tuple((f.crm, f.canonical, "." in f.crm, f) for f in self.pull_fields)

    def select(self) -> list[str]:
        """CRM fields to read: every pulled field plus key and modstamp, each once, in order."""
        names = [self.key] + [f.crm for f in self.pull_fields] + [self.modstamp]
        return list(dict.fromkeys(names))

    def to_canonical(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for crm, canonical, dotted, spec in self._pulled:
            if crm in row:
                out[canonical] = convert_in(row[crm], spec)
            elif dotted:
                found, value = follow(row, crm)
                if found:
                    out[canonical] = convert_in(value, spec)
        out.setdefault("crm_id", row.get(self.key))
        if "modstamp" not in out and self.modstamp in row:
            out["modstamp"] = parse_datetime(row[self.modstamp])
        return out

    def to_crm(self, update: Mapping[str, Any]) -> dict[str, Any]:
        """CRM field values of one update (canonical names; `crm_id` and `_`-keys skipped)."""
        out: dict[str, Any] = {}
        for name, value in update.items():
            if name == "crm_id" or name.startswith("_"):
                continue
            spec = self.fields.get(name)
            if spec is None:
                raise FieldMapError(f"{self.name}.{name} is not in the field map")
            out[spec.crm] = convert_out(value, spec)
        return out

    def guarded(self, update: Mapping[str, Any]) -> bool:
        return any(self.fields[n].guarded for n in update if n in self.fields)


@dataclass(frozen=True)
class FieldMap:
    crm: str
    objects: Mapping[str, ObjectMap]

    def object(self, name: str) -> ObjectMap:
        try:
            return self.objects[name]
        except KeyError:
            raise FieldMapError(
                f"object {name!r} is not in the {self.crm} field map "
                f"(mapped: {sorted(self.objects)})"
            ) from None

    def in_zone(self, zone: tzinfo) -> FieldMap:
        """This map with its user-local date fields read and written in `zone`."""
        objects = {
            name: replace(om, fields={c: replace(s, zone=zone) if s.behavior == values.USER_LOCAL
                                      else s for c, s in om.fields.items()})
            for name, om in self.objects.items()}
        return replace(self, objects=objects)


def follow(row: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """A Salesforce relationship path's value in a queried record (``A__r.B__r.C__c``: the
    related records come nested under their relationship names; an empty lookup is null, so
    the path's value is None); ``(False, None)`` when the record does not carry the path. Keys
    match case-insensitively, as SOQL names do."""
    current: Any = row
    for hop in path.split("."):
        if current is None:
            return True, None
        if not isinstance(current, Mapping):
            return False, None
        if hop in current:
            current = current[hop]
            continue
        key = next((k for k in current if isinstance(k, str) and k.lower() == hop.lower()),
                   None)
        if key is None:
            return False, None
        current = current[key]
    return True, current


def convert_in(value: Any, spec: FieldSpec) -> Any:
    """The canonical value of one CRM value, or the value itself, raw (values.py)."""
    if value is None:
        return None
    if spec.type == "decimal":
        return values.decimal_in(value)
    if spec.type == "int":
        return values.int_in(value)
    if spec.type == "bool":
        return values.bool_in(value)
    if spec.type == "datetime":
        return parse_datetime(value)
    if spec.type == "date":
        return values.date_in(value, spec.behavior, spec.zone)
    if spec.type == "choice" and isinstance(value, str | int) and not isinstance(value, bool):
        return spec.choices.get(str(value), value)
    return value


def convert_out(value: Any, spec: FieldSpec) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise FieldMapError(f"{spec.canonical}={value} is not a finite number")
        as_float = float(value)
        if Decimal(repr(as_float)) != value:
            raise FieldMapError(f"{spec.canonical}={value} cannot be sent exactly as a number")
        return int(value) if value == value.to_integral_value() and spec.type == "int" else as_float
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return values.date_out(value, spec.behavior, spec.zone)
    if spec.type == "choice" and spec.choices:
        reverse = {v: k for k, v in spec.choices.items()}
        if value in reverse:
            key = reverse[value]
            return int(key) if key.lstrip("-").isdigit() else key
    return value


def _spec(obj: str, canonical: str, raw: Any) -> FieldSpec:
    if isinstance(raw, str):
        return FieldSpec(canonical, raw)
    if not isinstance(raw, Mapping) or "field" not in raw:
        raise FieldMapError(f"{obj}.{canonical}: expected a field name or a table with 'field'")
    for key in raw:
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(key, SPEC_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FieldMapError(f"{obj}.{canonical}: unknown key {key!r}{hint}")
    kind = raw.get("type", "str")
    if kind not in TYPES:
        raise FieldMapError(f"{obj}.{canonical}: unknown type {kind!r}")
    behavior = raw.get("behavior", values.DATE_ONLY)
    if behavior not in values.BEHAVIORS:
        raise FieldMapError(f"{obj}.{canonical}: unknown behavior {behavior!r} (one of "
                            f"{', '.join(values.BEHAVIORS)})")
    if "behavior" in raw and kind != "date":
        raise FieldMapError(f"{obj}.{canonical}: behavior applies to type 'date' only")
    return FieldSpec(canonical, raw["field"], kind, bool(raw.get("push", False)),
                     bool(raw.get("guarded", False)), dict(raw.get("choices", {})), behavior)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two raw maps, the override winning entry by entry."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key != "choices":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build(raw: Mapping[str, Any]) -> FieldMap:
    objects: dict[str, ObjectMap] = {}
    for name, obj in raw.get("objects", {}).items():
        try:
            fields = {c: _spec(name, c, r) for c, r in obj.get("fields", {}).items()}
            objects[name] = ObjectMap(
                name=name, crm_object=obj["crm_object"], key=obj["key"],
                modstamp=obj["modstamp"], fields=fields, logical_name=obj.get("logical_name"),
                change_tracking=bool(obj.get("change_tracking", False)),
                accepted_states=frozenset(str(s) for s in obj.get("accepted_states", ())),
            )
        except KeyError as exc:
            raise FieldMapError(f"object {name!r}: missing {exc.args[0]!r}") from None
    return FieldMap(crm=str(raw.get("crm", "")), objects=objects)


def read_raw(name_or_path: str) -> dict[str, Any]:
    """A built-in map by name (config/fieldmaps/NAME.toml) or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        text = path.read_text(encoding="utf-8")
    else:
        text = (resources.files("config") / "fieldmaps" / f"{name_or_path}.toml").read_text(
            encoding="utf-8")
    return tomllib.loads(text)


def load(name_or_path: str, overrides: str | Mapping[str, Any] | None = None) -> FieldMap:
    raw = read_raw(name_or_path)
    if overrides:
        raw = merge(raw, read_raw(overrides) if isinstance(overrides, str) else overrides)
    return build(raw)
