"""The connector fakes (``conn_support``, ``fake_dv``) live beside the connector unit tests;
the tests here that also write files use the same fakes."""
from __future__ import annotations

import sys
from pathlib import Path

FAKES = Path(__file__).resolve().parents[2] / "unit" / "connectors"
if str(FAKES) not in sys.path:
    sys.path.insert(0, str(FAKES))
