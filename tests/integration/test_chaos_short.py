"""The chaos harness's short run (issue 13, items 5 and 8): ``bench/chaos.py`` with 2 trials of
each strike on SQLite and on PostgreSQL, small worlds: SIGKILL and SIGTERM at drawn instants,
and a budget stop as the worker begins the quote-line pull (the CRM's usage raised to the
worker's share or answering REQUEST_LIMIT_EXCEEDED, drawn; the run stops after quotes were read
and before the accounts, then the allowance comes back). Every invariant the harness checks
holds after recovery.

Three further SIGKILL strikes are aimed (``--kill-in``) at the steps that hold claims: the
dispatch (requests ``dispatching``), the push (outbox rows ``sending``) and the bill run (its
row ``running``); recovery must take each back at once, its process being gone (issue 13,
item 5), not after a 10- or 5-minute lease.
"""
from __future__ import annotations

import pytest
from bench_module import load

# Seed 7 as before; the budget trials use seed 1, which draws one stop of each kind (cap, share).
STRIKES = {"kill": ["--signal", "kill", "--seed", "7"], "term": ["--signal", "term", "--seed", "7"],
           "budget": ["--signal", "budget", "--seed", "1", "--kill-in", "pull:quote_line",
                      "--kill-at", "0"],
           **{f"kill-in-{step}": ["--signal", "kill", "--seed", "11", "--kill-in", step,
                                  "--kill-at", "0.05"]
              for step in ("dispatch", "push", "bill-run")}}


def _short_run(database: str, strike: str) -> None:
    chaos = load("chaos")
    args = chaos.parse_args(["--trials", "2", "--database", database, "--accounts", "60",
                             "--quotes", "60", "--rounds", "1", "--recovery-rounds", "2",
                             *STRIKES[strike]])
    violations = chaos.run_trials(args)
    assert {"no request left dispatching", "no outbox row left sending",
            "no bill run left running"} <= set(chaos.INVARIANTS)
    assert dict(violations) == {}


@pytest.mark.parametrize("strike", sorted(STRIKES))
def test_chaos_short_sqlite(strike: str) -> None:
    _short_run("sqlite", strike)


@pytest.mark.postgres
@pytest.mark.parametrize("strike", sorted(STRIKES))
def test_chaos_short_postgres(pg_schema_url: str, strike: str) -> None:
    # pg_schema_url: skips (or fails on CI) when PostgreSQL is unreachable, as every
    # PostgreSQL test does; the harness makes and drops its own schema per trial.
    _short_run("postgres", strike)
