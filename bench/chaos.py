"""Chaos harness: kill the worker or spend its API budget at random instants; check recovery.

    .venv/bin/python bench/chaos.py --trials 20 --database sqlite|postgres \
        [--signal kill|term|budget] [--budget share|cap|both] [--seed S] \
        [--accounts 120] [--quotes 120]

Each trial: a fresh ledger database (a SQLite file, or a fresh PostgreSQL schema), the sandbox
CRM (Salesforce side, in process, reset and changed by a seeded CRM user: holds, credit limits,
accepted quotes, new revisions), a webhook receiver on 127.0.0.1 that records each provisioning
delivery with its idempotency key, and the worker as a child process (``chaos_worker.py``: the
daemon's job bodies, sync with push, bill run, dispatch, push) killed with the signal at a seeded
random instant of its life. Recovery runs the worker again, unkilled, until it is idle (a few
rounds), then ``chaos_checks`` checks every invariant. Per-trial lines, then a summary (trials,
where the kills landed, violations by invariant, re-deliveries, time); exit 1 on any violation.

``--signal budget`` sends no signal: at the drawn instant the CRM's daily API allowance runs out
under the worker, by the sandbox's Salesforce usage, as other integrations would spend it. Either
the usage is raised to the worker's configured share (``share``: the CRM reports it in
``Sforce-Limit-Info`` and the worker's own budget guard stops the run before its next call) or
to the whole allowance (``cap``: the CRM answers 403 REQUEST_LIMIT_EXCEEDED TotalRequests);
``--budget both`` draws one of the two per trial. The worker goes on to the end of its rounds
(each later sync and push stops on the budget). Then the budget comes back: the sandbox's usage
is set to 0 and recovery runs "the next day" (the worker's clock 25 hours ahead), because the
worker keeps the last usage figure it recorded for the CRM's 24-hour window and, once at its
share, rightly asks the CRM nothing more until that figure lapses.

Rules this module keeps:
- Everything random comes from ``--seed`` (trial t uses seed + t): the CRM changes, the kill
  instant, the kind of budget stop. The instant is drawn over 90 % of the worker's life (the
  median of the last five whole lives measured: the unkilled calibration run, then each trial
  whose worker ended before its instant, so that the signals keep landing inside the run on a
  machine whose load changes).
- Nothing outlives the harness: the child is killed and waited for, the receiver and sandbox
  stopped, the PostgreSQL schema dropped, the temporary directory removed.
"""
from __future__ import annotations

import argparse
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chaos_checks import INVARIANTS, Delivery, check_all  # noqa: E402

PG_URL = os.environ.get("LEDGERBRIDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SECRET_ENV = "LEDGERBRIDGE_CHAOS_WEBHOOK_SECRET"
WORKER = Path(__file__).resolve().parent / "chaos_worker.py"


class Receiver:
    """A provisioning webhook on loopback: records (request id, idempotency key) per POST whose
    signature verifies, and answers 200."""

    def __init__(self, secret: str) -> None:
        self.deliveries: list[Delivery] = []
        self.bad_signatures = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                want = "sha256=" + hmac.new(secret.encode(), body, sha256).hexdigest()
                with lock:
                    if hmac.compare_digest(want, self.headers.get("X-Ledgerbridge-Signature",
                                                                  "")):
                        outer.deliveries.append((str(json.loads(body)["request_id"]),
                                                 self.headers.get("Idempotency-Key", "")))
                    else:
                        outer.bad_signatures += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/provision"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def clear(self) -> None:
        self.deliveries.clear()
        self.bad_signatures = 0

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CRM:
    """What the checks read of the sandbox CRM, through its SOQL endpoint."""

    def __init__(self, sbx: Any) -> None:
        self.sbx = sbx

    def _rows(self, soql: str) -> list[dict[str, Any]]:
        return list(self.sbx.salesforce_client().query_all(soql)["records"])

    def accepted_quotes(self) -> list[dict[str, Any]]:
        """Accepted quotes that have lines (a quote without lines waits for them, by rule)."""
        with_lines = {r["QuoteId"] for r in self._rows("SELECT QuoteId FROM QuoteLineItem")}
        return [q for q in self._rows("SELECT Id, Revision__c FROM Quote "
                                      "WHERE Status = 'Accepted'") if q["Id"] in with_lines]

    def account_ids(self) -> list[str]:
        return [r["Id"] for r in self._rows("SELECT Id FROM Account")]

    def billing_holds(self) -> dict[str, Any]:
        return {r["Id"]: r["Billing_Hold__c"]
                for r in self._rows("SELECT Id, Billing_Hold__c FROM Account")}


@contextmanager
def ledger(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh, migrated ledger database; yields its URL and drops it afterwards."""
    from sqlalchemy import text

    from billing_core.adapters.db import make_engine
    from jobs.migrate import upgrade

    if kind == "sqlite":
        url = f"sqlite:///{tmp / 'ledger.db'}"
        schema = None
    else:
        schema = f"lbchaos_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    upgrade(engine)
    # the sandbox's countries have their rates, as the demo sets them: a country without one
    # is not billed, and the bill run is what the strikes aim at
    from jobs.cli.demo_crm import set_sandbox_tax_rates

    set_sandbox_tax_rates(engine)
    engine.dispose()
    try:
        yield url
    finally:
        if schema is not None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()


def crm_user(sbx: Any, rng: random.Random, accounts: int, quotes: int) -> None:
    """A CRM user's seeded changes before the worker starts: finance holds, tight credit limits,
    quotes accepted, an accepted quote revised."""
    sf = sbx.salesforce
    for i in rng.sample(range(accounts), k=max(accounts // 10, 1)):
        sf.admin("set_hold", {"index": i, "hold": rng.random() < 0.5})
    for i in rng.sample(range(accounts), k=max(accounts // 10, 1)):
        sf.admin("set_credit_limit", {"index": i, "credit_limit": rng.choice([0, 100, 5000])})
    for i in rng.sample(range(quotes), k=max(quotes // 4, 1)):
        sf.admin("set_quote_status", {"index": i, "status": "Accepted"})
    for i in rng.sample(range(quotes), k=max(quotes // 20, 1)):
        sf.admin("update", {"object": "Quote", "index": i,
                            "fields": {"Revision__c": 2, "Status": "Accepted"}})


def config_text(sbx: Any, url: str, receiver: Receiver,
                bill_chunk: int | None = None) -> tuple[str, dict[str, str]]:
    from jobs.cli.demo_crm import sandbox_config

    extra = (f'[provisioner]\nkind = "webhook"\nurl = "{receiver.url}"\n'
             f'secret_env = "{SECRET_ENV}"\nmax_attempts = 3\ntimeout_seconds = 5.0\n')
    if bill_chunk:      # many work units: a kill lands between units, the reader process runs
        extra += f"[billing]\nbill_run_chunk_size = {bill_chunk}\n"
    return sandbox_config(sbx, url, connections=("sf",), extra=extra)


def run_worker(config: Path, phases: Path, env: dict[str, str], rounds: int,
               kill_after: float | None, strike: Callable[[subprocess.Popen[bytes]], None],
               kill_in: str | None = None, timeout: float = 300.0,
               clock_shift_hours: float = 0.0) -> tuple[int, float, str]:
    """The worker child; ``strike`` (a signal, a budget stop) hits it ``kill_after`` seconds
    after its first step began (if still alive: start-up, mostly imports, is not what a trial is
    after). Returns its exit code, how long it worked (first step to exit) and the step the
    strike found it in."""
    errors = phases.with_name(phases.name + ".stderr")     # kept for a failed recovery
    with errors.open("wb") as err:
        proc = subprocess.Popen([sys.executable, str(WORKER), str(config), str(phases),
                                 "--rounds", str(rounds),
                                 "--clock-shift-hours", str(clock_shift_hours)], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + timeout
        def started() -> bool:
            if kill_in is not None and kill_after is not None:
                return kill_in in _steps(phases)
            return phases.exists() and phases.stat().st_size > 0

        while proc.poll() is None and not started():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not start in {timeout} s")
            time.sleep(0.005)
        t0, phase = time.monotonic(), "-"
        if kill_after is not None:
            try:
                proc.wait(timeout=kill_after)
                phase = "after exit"
            except subprocess.TimeoutExpired:
                phase = last_phase(phases)
                strike(proc)
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, time.monotonic() - t0, phase


def signaller(sig: int) -> Callable[[subprocess.Popen[bytes]], None]:
    def strike(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(sig)
    return strike


class BudgetStop:
    """Other integrations spend the CRM's allowance: up to the worker's share, or all of it.
    ``past()``: the calls the worker spent after that (in flight when it struck: the guard
    lets no new call through once the CRM reported the share; a refused call spends none)."""

    def __init__(self, sbx: Any, kind: str, share: float) -> None:
        self.usage, self.kind, self.share = sbx.salesforce.usage, kind, share
        self.struck_at: int | None = None

    def __call__(self, _proc: subprocess.Popen[bytes]) -> None:
        limit = self.usage.limit
        self.struck_at = limit if self.kind == "cap" else int(limit * self.share)
        self.usage.set(used=self.struck_at)

    def past(self) -> int | None:
        return None if self.struck_at is None else self.usage.used - self.struck_at


#: Recovery after a budget stop runs this far ahead: past the CRM's 24-hour window.
NEXT_DAY_HOURS = 25.0


def _steps(phases: Path) -> list[str]:
    return phases.read_text(encoding="utf-8").split() if phases.exists() else []


def last_phase(phases: Path) -> str:
    steps = _steps(phases)
    return steps[-1] if steps else "start-up"


def trial(sbx: Any, receiver: Receiver, args: argparse.Namespace, n: int,
          horizon: float | None) -> dict[str, Any]:
    """One trial; ``horizon`` None runs it unkilled (to measure the worker's life)."""
    from billing_core.adapters.db import make_engine
    from config.settings import load_settings

    seed = args.seed + n
    rng = random.Random(seed)
    sbx.reset()
    receiver.clear()
    crm_user(sbx, rng, args.accounts, args.quotes)
    # 0.9: a loaded machine stretches or shrinks the run; a signal after exit tests nothing.
    kill_after = rng.uniform(0.0, 0.9 * horizon) if horizon else None
    if horizon and args.kill_in is not None and args.kill_at is None:
        kill_after = rng.uniform(0.0, 0.2)
    if horizon and args.kill_at is not None:
        kill_after = args.kill_at
    budget_kind = rng.choice(("share", "cap")) if args.budget == "both" else args.budget
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lbchaos-") as tmp_name, \
            ledger(args.database, Path(tmp_name)) as url:
        tmp = Path(tmp_name)
        text, env = config_text(sbx, url, receiver, args.bill_chunk)
        config = tmp / "ledgerbridge.toml"
        config.write_text(text, encoding="utf-8")
        env = {**os.environ, **env, SECRET_ENV: args.secret}
        strike: Callable[[subprocess.Popen[bytes]], None]
        stop = BudgetStop(sbx, budget_kind, load_settings(config).connections["sf"].budget_share)
        if args.signal == "budget":
            strike = stop
        else:
            strike = signaller(signal.SIGKILL if args.signal == "kill" else signal.SIGTERM)
        rc, lived, phase = run_worker(config, tmp / "phases", env, args.rounds, kill_after,
                                      strike, args.kill_in)
        next_day, past_share = 0.0, None
        if args.signal == "budget" and horizon:
            past_share = stop.past()
            sbx.salesforce.usage.set(used=0)             # the allowance comes back
            next_day = NEXT_DAY_HOURS
        recovery_rc, _, _ = run_worker(config, tmp / "recovery", env, args.recovery_rounds,
                                       None, strike, clock_shift_hours=next_day)
        recovery_error = (tmp / "recovery.stderr").read_text(errors="replace").strip()
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                found, apart = check_all(conn, CRM(sbx), receiver.deliveries)
        finally:
            engine.dispose()
    if recovery_rc != 0:
        last = recovery_error.splitlines()[-1] if recovery_error else "no message"
        found.setdefault("recovery run", []).append(f"exit code {recovery_rc}: {last}")
    if receiver.bad_signatures:
        found.setdefault("signatures", []).append(f"{receiver.bad_signatures} bad signatures")
    return {"trial": n, "seed": seed, "kill_after": kill_after, "exit": rc, "lived": lived,
            "strike": args.signal if args.signal != "budget" else f"budget:{budget_kind}",
            "past_share": past_share,
            "phase": phase, "found": {k: v for k, v in found.items() if v},
            "deliveries": len(receiver.deliveries), **apart,
            "seconds": time.monotonic() - t0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--signal", choices=("kill", "term", "budget"), default="kill",
                    help="SIGKILL, SIGTERM, or no signal: the CRM's API budget runs out at the "
                         "instant (see --budget), comes back, and recovery runs the next day")
    ap.add_argument("--budget", choices=("share", "cap", "both"), default="both",
                    help="with --signal budget: the CRM's usage raised to the worker's share "
                         "(its guard stops it), or to the whole allowance (403 "
                         "REQUEST_LIMIT_EXCEEDED TotalRequests); both: drawn per trial")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--accounts", type=int, default=120)
    ap.add_argument("--quotes", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=2, help="worker rounds in a killed run")
    ap.add_argument("--bill-chunk", type=int, default=None, metavar="N",
                    help="the bill run's chunk size (work unit) in accounts; small values cut "
                         "a run into many units (on SQLite 8 or more use the reader process)")
    ap.add_argument("--kill-at", type=float, default=None,
                    help="signal this many seconds into every trial (after --kill-in's step "
                         "began, if given) instead of a drawn instant")
    ap.add_argument("--kill-in", default=None, metavar="STEP",
                    help="signal once the worker begins this step (sync, pull:<object>, "
                         "bill-run, dispatch, push): to aim at one part of the cycle")
    ap.add_argument("--recovery-rounds", type=int, default=3,
                    help="worker rounds, unkilled, to recover")
    args = ap.parse_args(argv)
    args.secret = uuid.uuid4().hex
    return args


def run_trials(args: argparse.Namespace) -> Counter[str]:
    """The calibration run and ``args.trials`` trials, printed as they go, then the summary.
    Returns the violations counted by invariant (empty: none)."""
    from connectors.sandbox.server import Sandbox

    started = time.monotonic()
    violations: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    redeliveries = 0
    receiver = Receiver(args.secret)
    try:
        with Sandbox(accounts=args.accounts, quotes=args.quotes, seed=args.seed,
                     sides=("salesforce",)) as sbx:
            calibration = trial(sbx, receiver, args, -1, None)
            horizon = calibration["lived"]
            print(f"calibration (no kill): worker worked {horizon:.1f} s, "
                  f"{calibration['deliveries']} deliveries, violations "
                  f"{calibration['found'] or 'none'}", flush=True)
            for name, found in calibration["found"].items():
                violations[f"{name} (unkilled)"] += len(found)
            lives = [horizon]
            for n in range(args.trials):
                r = trial(sbx, receiver, args, n, horizon)
                if r["phase"] == "after exit":
                    # The worker ended before the drawn instant: its whole life was measured.
                    # The horizon follows the lives seen lately (a loaded machine makes the
                    # calibration run long, and a signal after exit tests nothing).
                    lives = [*lives[-4:], r["lived"]]
                    horizon = sorted(lives)[len(lives) // 2]
                phases[r["phase"]] += 1
                redeliveries += r["redeliveries"]
                for name, found in r["found"].items():
                    violations[name] += len(found)
                _print_trial(args, r)
    finally:
        receiver.stop()
    what = "budget stop" if args.signal == "budget" else f"SIG{args.signal.upper()}"
    print(f"\nsummary: {args.trials} trials, {args.database}, {what}, "
          f"seed {args.seed}, {args.accounts} accounts, {args.quotes} quotes, "
          f"{time.monotonic() - started:.0f} s")
    landed = "the budget ran out" if args.signal == "budget" else "signals landed"
    print(f"  {landed} in: " + ", ".join(f"{p} {c}" for p, c in sorted(phases.items())))
    print(f"  re-deliveries with the same idempotency key (not violations): {redeliveries}")
    for name in (*INVARIANTS, *sorted(set(violations) - set(INVARIANTS))):
        print(f"  {name:<42} {violations.get(name, 0)} violations")
    return violations


def _print_trial(args: argparse.Namespace, r: dict[str, Any]) -> None:
    print(f"trial {r['trial']:3d} seed {r['seed']}: {r['strike']} at {r['kill_after']:.2f} s "
          f"in {r['phase']:<16} exit {r['exit']:4d}  invoices {r['invoices']:3d}  "
          f"deliveries {r['deliveries']:3d} "
          f"(re-sent {r['redeliveries']})  refused {r['refused']}  "
          + (f"calls after the budget ran out {r['past_share']}  "
             if r["past_share"] is not None else "") + "budget stops "
          f"{r['budget_stops']}  {r['seconds']:.1f} s  "
          f"{'ok' if not r['found'] else 'VIOLATIONS'}", flush=True)
    for name, found in r["found"].items():
        for line in found[:5]:
            print(f"    {name}: {line}")
        if len(found) > 5:
            print(f"    {name}: ... {len(found) - 5} more")


def main(argv: list[str] | None = None) -> int:
    return 1 if sum(run_trials(parse_args(argv)).values()) else 0


if __name__ == "__main__":
    sys.exit(main())
