"""A script of ``bench/`` loaded as a module, for the tests that run a benchmark's own code
(the chaos harness, the sync bench's replay). ``bench/`` is not a package, and its
``sync.py`` would shadow the ``sync`` package if the folder went on ``sys.path``."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(script: str) -> ModuleType:
    """``bench/<script>.py``, executed afresh as ``lb_bench_<script>`` (no state is left from
    an earlier test)."""
    name = f"lb_bench_{script}"
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
