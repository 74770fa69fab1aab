"""The exit-code contract of every command (scripts and monitors rely on it).

- 0: done, and nothing needs attention.
- 1: done, with something needing attention: a partial or stopped run (``sync``, ``run
  --once``), records quarantined, a retry still refused, rows of a ``usage import`` refused,
  requests a ``provisioning dispatch`` could not send, a batch of memo ids partly refused,
  ``status`` with attention lines, ``doctor`` with a failed check, a bill run with errors.
- 2: bad input or configuration: one line on stderr, ``error: ...``, naming the field and the
  value, nothing written (a usage error, an unknown id, a malformed amount or date, a missing
  secret or refused credentials, a database URL that cannot work, a database missing or at
  another schema, an account the CRM does not have).
- 3: a dependency could not be reached after the bounded retries (the CRM, the database),
  or the database was held by another process past the wait (SQLite's busy timeout).
  ``doctor`` reports an unreachable database as a failed check (1).
- 130: interrupted (Ctrl-C, or SIGTERM during a ``sync``).

A command over several connections exits with the most serious code of its runs, in the order
130, 2, 3, 1, 0. ``--json`` output carries the outcome each code is derived from (a run's
``outcome`` and ``cause``) and exits with the same code.
``tests/integration/test_cli_exit_contract.py`` checks every command against this contract.
"""
from __future__ import annotations

from collections.abc import Iterable

from sync.runs import RunReport

OK = 0
ATTENTION = 1
BAD_INPUT = 2
UNREACHABLE = 3
INTERRUPTED = 130

_SEVERITY = (INTERRUPTED, BAD_INPUT, UNREACHABLE, ATTENTION, OK)


def for_run(report: RunReport) -> int:
    """One sync run's code."""
    if report.outcome == "interrupted":
        return INTERRUPTED
    if report.cause == "config" or report.not_found:
        return BAD_INPUT
    if report.cause == "unreachable":
        return UNREACHABLE
    return OK if report.outcome == "ok" else ATTENTION


def worst(codes: Iterable[int]) -> int:
    """The most serious of several codes (see the module's order)."""
    found = set(codes)
    return next((c for c in _SEVERITY if c in found), OK)
