"""The documented defaults cannot drift from the real ones: the dataclasses hold each default
once, and the example files must list every key with exactly that default."""
from __future__ import annotations

import re
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from config.settings import SECTIONS, Settings, parse_settings
from connectors.settings import ConnectionSettings, parse_connection

CONFIG = Path(__file__).resolve().parents[2] / "config"
COMMENTED_KEY = re.compile(r"^#\s*(\w+)\s*=")


def _commented_keys(text: str) -> dict[str, set[str]]:
    """Keys written as comments (``# url = ...``), by the section they appear in."""
    out: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        header = re.match(r"^\[([\w.]+)\]", line)
        if header:
            section = header.group(1)
        elif match := COMMENTED_KEY.match(line):
            out.setdefault(section, set()).add(match.group(1))
    return out


def test_every_documented_default_is_the_dataclass_default() -> None:
    data = tomllib.loads((CONFIG / "defaults.example.toml").read_text(encoding="utf-8"))
    assert parse_settings(data, env={}) == Settings()


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_setting_is_documented_with_its_default(section: str) -> None:
    text = (CONFIG / "defaults.example.toml").read_text(encoding="utf-8")
    written = set(tomllib.loads(text).get(section, {}))
    commented = _commented_keys(text).get(section, set())
    cls, _rules = SECTIONS[section]
    for f in fields(cls):
        # a key without a default (None) cannot be written in TOML: it is shown as a comment
        assert f.name in written or (f.default is None and f.name in commented), (
            f"[{section}] {f.name} is not in config/defaults.example.toml")


def test_every_connection_key_is_in_the_example_and_every_value_there_is_its_default() -> None:
    text = (CONFIG / "connections.example.toml").read_text(encoding="utf-8")
    tables = tomllib.loads(text)["connections"]
    mentioned = set().union(*_commented_keys(text).values(), *(set(t) for t in tables.values()))
    assert {f.name for f in fields(ConnectionSettings)} - {"name"} <= mentioned
    # what an example must choose: keys without a default, or whose default is "none"
    chosen = {f.name for f in fields(ConnectionSettings)
              if f.default is MISSING or f.default is None} | {"credentials"}
    for name, table in tables.items():
        minimal = {key: value for key, value in table.items() if key in chosen}
        assert parse_connection(name, table) == parse_connection(name, minimal), name
