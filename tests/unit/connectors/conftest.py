"""Fixtures for connector unit tests (helpers live in conn_support.py)."""

from __future__ import annotations

from conn_support import Sleeper, sleeper

__all__ = ["Sleeper", "sleeper"]
