"""Sync integration tests: the engine against an in-memory CRM and a real database."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "sync"))
