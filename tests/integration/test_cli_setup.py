"""Set-up without guesswork (issue 15, item 4): ``--version``, ``sandbox --write-config``,
``demo --keep``'s restart line, ``init``, and a ``doctor`` that probes once with short timeouts
and says what to do about each problem.

Regressions: the sandbox printed credentials but wrote no config; ``demo --keep`` kept a config
whose secrets lived only in the demo's own environment and whose CA was deleted with the
sandbox; ``doctor`` against a CRM that refused connections took 22 s (five attempts with
backoff) and against an unreachable host 40 s."""
from __future__ import annotations

import os
import re
import shlex
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from importlib.metadata import version
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result
from sqlalchemy import select

from billing_core.adapters.db import make_engine
from config.settings import load_settings
from connectors.sandbox.tls import CABundleSession
from jobs.cli import exits, main
from sync.tables import event_inbox

LEDGERBRIDGE = str(Path(sys.executable).parent / "ledgerbridge")


def _cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_version_comes_from_the_package_metadata() -> None:
    result = _cli("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"ledgerbridge {version('ledgerbridge')}"


# --- sandbox --write-config -------------------------------------------------------------------

class SandboxProcess:
    """``ledgerbridge sandbox ...`` as a child process, started and stopped by the test."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen([LEDGERBRIDGE, "sandbox", *args], cwd=cwd, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:          # until the sandbox says it answers
            self.lines.append(line)
            if "admin:" in line:
                break
        else:
            raise AssertionError("the sandbox ended before it answered:\n" + "".join(self.lines))
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def written(tmp_path: Path) -> Iterator[tuple[Path, SandboxProcess]]:
    config = tmp_path / "lb.toml"
    sbx = SandboxProcess(["--port", "0", "--accounts", "12", "--quotes", "4",
                          "--write-config", str(config)], tmp_path)
    yield config, sbx
    sbx.stop()


def test_write_config_gives_a_config_sync_and_status_use_as_it_is(
        written: tuple[Path, SandboxProcess], tmp_path: Path) -> None:
    config, _sbx = written
    text = config.read_text()
    secrets = tmp_path / "lb.secrets.toml"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert "ledgerbridge-sandbox-secret" in secrets.read_text()
    assert "ledgerbridge-sandbox-secret" not in text and "sbx~" not in text
    settings = load_settings(config)
    assert set(settings.connections) == {"sf", "d365"}
    assert all(Path(c.ca_bundle or "").is_file() for c in settings.connections.values())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERBRIDGE_")}
    for args in (["sync"], ["status"], ["doctor"]):
        done = subprocess.run([LEDGERBRIDGE, "--config", str(config), *args], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (args, done.stdout, done.stderr)


def test_the_written_tax_rates_let_the_sandbox_accounts_be_billed(
        written: tuple[Path, SandboxProcess], tmp_path: Path) -> None:
    """Beside the config: ``lb.tax-rates.csv``, imported by the line the config names; then
    a dry-run bill run of the synced sandbox refuses no account for want of a rate (before
    the import it refused every billable one: the sandbox seeds countries, no rates)."""
    config, _sbx = written
    (line,) = re.findall(r"^#   (ledgerbridge --config .* tax-rates import .*)$",
                         config.read_text(), re.MULTILINE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERBRIDGE_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LEDGERBRIDGE, *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    assert run("--config", str(config), "sync").returncode == 0
    today = date.today().isoformat()
    before = run("--config", str(config), "bill-run", "--date", today, "--dry-run")
    assert before.returncode == 1 and "has no tax rate" in before.stderr, before.stderr
    imported = run(*shlex.split(line)[1:])
    assert imported.returncode == 0, imported.stderr
    assert re.search(r"imported 1[0-9] tax rates, errors 0", imported.stdout), imported.stdout
    after = run("--config", str(config), "bill-run", "--date", today, "--dry-run")
    assert after.returncode == 0, after.stdout + after.stderr
    assert "has no tax rate" not in after.stderr


def test_the_written_restart_line_restarts_a_sandbox_the_config_still_fits(
        written: tuple[Path, SandboxProcess], tmp_path: Path) -> None:
    config, sbx = written
    (restart,) = re.findall(r"^#   (ledgerbridge sandbox --port [1-9].*)$", config.read_text(),
                            re.MULTILINE)
    sbx.stop()
    assert _cli("--config", str(config), "db", "upgrade").exit_code == 0
    again = SandboxProcess(shlex.split(restart)[2:], tmp_path)
    try:
        result = _cli("--config", str(config), "doctor")
    finally:
        again.stop()
    assert result.exit_code == 0, result.output       # same URL, CA and credentials
    assert "sf: login" in result.output and "d365: login" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_write_config_with_notify_lets_the_daemon_take_the_sandbox_events(
        tmp_path: Path) -> None:
    """``sandbox --write-config FILE --notify URL``: the config has ``[connections.sf.events]``
    and ``[connections.d365.events]`` (secrets in the secrets file only), and a daemon started
    with it stores a Dataverse webhook, a Salesforce outbound message and a signed callout the
    sandbox sent, every one acked (before: no events tables, so every event was 404)."""
    port = _free_port()
    config = tmp_path / "lb.toml"
    sbx = SandboxProcess(["--port", "0", "--accounts", "12", "--quotes", "4",
                          "--write-config", str(config), "--notify", f"http://127.0.0.1:{port}",
                          "--notify-salesforce-form", "both"], tmp_path)
    daemon: subprocess.Popen[str] | None = None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERBRIDGE_")}
    try:
        text, secrets = config.read_text(), (tmp_path / "lb.secrets.toml").read_text()
        settings = load_settings(config)
        sf, d365 = settings.connections["sf"].events, settings.connections["d365"].events
        assert sf is not None and d365 is not None
        assert sf.organization_id and sf.organization_id.startswith("00D")
        assert (sf.hmac_secret, d365.auth, d365.key) == (
            "file:hmac_secret", "webhook_key", "file:webhook_key")
        values = re.findall(r'^(?:webhook_key|hmac_secret) = "(.+)"$', secrets, re.MULTILINE)
        assert len(values) == 2 and not any(v in text for v in values)
        assert f"--notify http://127.0.0.1:{port}" in text      # in the restart line
        subprocess.run([LEDGERBRIDGE, "--config", str(config), "db", "upgrade"], env=env,
                       cwd=tmp_path, check=True, capture_output=True, timeout=120)
        daemon = subprocess.Popen([LEDGERBRIDGE, "--config", str(config), "run", "--api-port",
                                   str(port)], env=env, cwd=tmp_path, text=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        session = CABundleSession(str(settings.connections["sf"].ca_bundle), timeout=(5, 60))
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and daemon.poll() is None, "no daemon API"
            time.sleep(0.2)
        base = settings.connections["sf"].url
        sf_id = session.post(f"{base}/__admin__/salesforce/set_hold",
                             json={"index": 2, "hold": True}).json()["id"]
        dv_id = session.post(f"{base}/__admin__/dataverse/set_creditonhold",
                             json={"index": 3}).json()["accountid"]
        flushed = session.post(f"{base}/__admin__/notify/flush", json={"timeout": 30}).json()
        assert flushed["flushed"]
        total = flushed["counters"]["total"]
        assert (total["sent"], total["acked"], total["failed"]) == (3, 3, 0), total
        engine = make_engine(f"sqlite:///{tmp_path / 'sandbox.db'}")
        with engine.connect() as conn:
            rows = {(r.connection, r.source, r.crm_id)
                    for r in conn.execute(select(event_inbox))}
        engine.dispose()
        assert rows == {("sf", "salesforce_soap", sf_id), ("sf", "salesforce_json", sf_id),
                        ("d365", "dataverse", dv_id)}
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=60)
        sbx.stop()


def test_write_config_refuses_to_replace_a_file_it_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text("[sync]\ninterval_minutes = 5\n")
    result = _cli("sandbox", "--port", "0", "--write-config", str(mine))
    assert result.exit_code == exits.BAD_INPUT
    assert "--force" in result.output and mine.read_text() == "[sync]\ninterval_minutes = 5\n"


def test_demo_keep_writes_a_config_that_says_how_to_restart_its_sandbox(tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    result = _cli("demo", "--accounts", "6", "--keep", str(keep))
    assert result.exit_code == 0, result.output
    config = keep / "ledgerbridge.toml"
    (restart,) = re.findall(r"^#   (ledgerbridge sandbox --port [1-9].*)$", config.read_text(),
                            re.MULTILINE)
    assert f"--ca-dir {keep / 'sandbox-ca'}" in restart
    assert "env:" not in config.read_text()           # nothing owed to the demo's environment
    again = SandboxProcess(shlex.split(restart)[2:], tmp_path)
    try:
        doctor = _cli("--config", str(config), "doctor")
    finally:
        again.stop()
    assert doctor.exit_code == 0, doctor.output
    twice = _cli("demo", "--accounts", "6", "--keep", str(keep))   # not over a kept ledger
    assert twice.exit_code == exits.BAD_INPUT and "already holds a kept demo" in twice.output


# --- init -------------------------------------------------------------------------------------

def test_init_writes_a_commented_config_doctor_accepts(tmp_path: Path) -> None:
    out = tmp_path / "org.toml"
    result = _cli("init", "--crm", "dynamics", "--url", "https://127.0.0.1:9",
                  "--client-id", "11111111-1111-1111-1111-111111111111",
                  "--secret-env", "D365_SECRET", "--tenant-id", "t-1",
                  "--database-url", f"sqlite:///{tmp_path / 'l.db'}", "-o", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert 'client_secret = "env:D365_SECRET"' in text and text.count("\n#") >= 10
    settings = load_settings(out)
    assert settings.connections["d365"].tenant_id == "t-1"
    assert _cli("--config", str(out), "db", "upgrade").exit_code == 0
    doctor = _cli("--config", str(out), "doctor", env={"D365_SECRET": ""})
    assert doctor.exit_code == exits.ATTENTION        # the config is accepted; the CRM is not there
    assert "config   " in doctor.output.replace("│", " ") and "problem: d365: " in doctor.output


@pytest.mark.parametrize(("args", "says"), [
    (["--crm", "dynamics"], "--tenant-id is required"),
    (["--crm", "salesforce", "--secret-env", "NOT A NAME"], "not an environment variable"),
    (["--crm", "salesforce", "--url", "http://acme.my.salesforce.com"], "https://"),
])
def test_init_refuses_what_would_not_work(tmp_path: Path, args: list[str], says: str) -> None:
    base = {"--url": "https://acme.my.salesforce.com", "--client-id": "c", "--secret-env": "S"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    flat = [x for kv in base.items() for x in kv]
    result = _cli("init", *flat, "-o", str(tmp_path / "x.toml"))
    assert result.exit_code == exits.BAD_INPUT and says in result.output
    assert not (tmp_path / "x.toml").exists()


# --- doctor -----------------------------------------------------------------------------------

@pytest.fixture
def resetting_server() -> Iterator[tuple[int, list[int]]]:
    """A TCP port that accepts and closes at once (a ConnectionError, which the worker retries),
    counting the connections it got."""
    srv = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1], accepted
    srv.close()


def test_doctor_probes_once_and_says_what_to_do(tmp_path: Path,
                                                resetting_server: tuple[int, list[int]]) -> None:
    port, accepted = resetting_server
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "none.db"}"\n'
                      f'[connections.sf]\ncrm = "salesforce"\nurl = "https://127.0.0.1:{port}"\n'
                      '[connections.sf.credentials]\nclient_id = "id"\n'
                      'client_secret = "env:LB_DOCTOR_SECRET"\n'
                      f'[connections.sf2]\ncrm = "salesforce"\nurl = "https://127.0.0.1:{port}"\n'
                      '[connections.sf2.credentials]\nclient_id = "id"\n'
                      'client_secret = "env:LB_DOCTOR_UNSET"\n')
    env = {"LB_DOCTOR_SECRET": "s", "LB_DOCTOR_UNSET": None}
    result = CliRunner().invoke(main, ["--config", str(config), "doctor"], env=env)
    assert result.exit_code == exits.ATTENTION, result.output
    assert len(accepted) == 1                         # sf: one attempt, no retries (worker: 5)
    problems = [ln for ln in result.output.splitlines() if ln.startswith("problem:")]
    assert len(problems) == 3, result.output          # database, sf login, sf2 credentials
    assert any("db upgrade" in p for p in problems)
    assert any(p.startswith("problem: sf: login failed: ") and "-> fix: " in p and " url " in p
               for p in problems)
    assert any("export LB_DOCTOR_UNSET=" in p for p in problems)
