"""``ledgerbridge --version`` answers before any command module is imported (issue 15: it took
about 1.4 s here, importing every command, the database layer and the API; now about 0.07 s).
"""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

from jobs.cli import LOG_FORMATS
from jobs.logs import FORMATS

_PROBE = """
import sys
from jobs.cli import main
try:
    main(["--version"])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "fastapi",
               "billing_core", "sync", "connectors") or m == "jobs.cli.commands")
print(code, heavy)
"""


def test_version_imports_no_command_module() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert out == [f"ledgerbridge {version('ledgerbridge')}", "0 []"]


def test_the_global_log_formats_are_the_logging_set_up_s() -> None:
    assert LOG_FORMATS == FORMATS
