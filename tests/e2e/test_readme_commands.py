"""The README's commands, run verbatim as a newcomer would (issue 15: "a script in tests/ that
runs the README's commands verbatim"). The commands are read from README.md's code blocks,
not copied here, so a README that changes is what runs:

1. The set-up block (``python3 -m venv .venv && .venv/bin/pip install -q . &&
   .venv/bin/ledgerbridge demo``) in a copy of this checkout in a temporary directory: a fresh
   virtual environment, the package installed from the copy, the demo run to its end.
2. The "Commands" block, line by line, from another temporary directory with that fresh
   environment's ``bin`` first on PATH: ``init``, then ``sandbox --write-config`` (left running,
   as the README says, until the test ends), ``db upgrade``, ``doctor``, ``sync``, ``status``,
   ``run`` (the daemon: started, then stopped with SIGTERM once it says it started), the import
   of the sandbox's sample tax rates and the dry-run bill run. Each exits 0 (before the README
   created the ledger and imported the rates, ``doctor`` failed its database check and the bill
   run refused every billable sandbox account for want of a tax rate: both exited 1), and the
   dry run would bill some accounts.

The test command block (``pip install -e '.[test]' && pytest -q``) is this suite itself: it is
checked to be the line ``.ci/run`` runs, not run from inside it.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
STARTED = {"sandbox": "admin:", "run": "daemon started"}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced block of a Markdown text: (its info string, its body)."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """The block's command lines, a line ending in ``\\`` joined with the next (as a shell
    does); the text is kept as written, comments included (bash drops them)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip()]


def readme_block(starts_with: str) -> list[str]:
    for _info, body in code_blocks(README.read_text()):
        lines = commands(body)
        if lines and lines[0].startswith(starts_with):
            return lines
    raise AssertionError(f"README.md has no code block starting {starts_with!r}")


def subcommand(line: str) -> str:
    """``ledgerbridge [--config FILE] NAME ...`` -> NAME."""
    words = shlex.split(line, comments=True)
    assert words[0] == "ledgerbridge", line
    words = words[1:]
    while words[0].startswith("-"):
        words = words[2:] if words[0] in ("--config", "--database-url") else words[1:]
    return words[0]


class Background:
    """A README command that keeps running: started with bash, read until it says it is up."""

    def __init__(self, line: str, cwd: Path, env: dict[str, str], ready: str) -> None:
        self.line = line
        self.proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=cwd, env=env,
                                     text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        timer = threading.Timer(60, self.proc.kill)          # bounded: never hangs the suite
        timer.start()
        try:
            for out in self.proc.stdout:
                self.lines.append(out)
                if ready in out:
                    break
            else:
                raise AssertionError(f"{line!r} ended before {ready!r}:\n{self.output}")
        finally:
            timer.cancel()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for out in self.proc.stdout:
            self.lines.append(out)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _copy_checkout(to: Path) -> None:
    """The checkout's files as they are (tracked and new, not ignored), without .venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            (to / name).write_bytes(source.read_bytes())


def _run(line: str, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The README's set-up block run verbatim in a copy of the checkout; its ``.venv/bin``."""
    (setup,) = readme_block("python3 -m venv .venv && .venv/bin/pip install -q . ")
    checkout = tmp_path_factory.mktemp("clone")
    _copy_checkout(checkout)
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "LEDGERBRIDGE_CONFIG",
                        "LEDGERBRIDGE_DATABASE_URL")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT / ".venv")))
    done = _run(setup, checkout, env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the sandbox is stopped" in done.stdout, done.stdout[-3000:]
    yield checkout / ".venv" / "bin"


def test_the_test_command_is_what_ci_runs() -> None:
    (test_line,) = readme_block("python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'")
    assert test_line in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_readme_commands_verbatim(fresh_install: Path, tmp_path: Path) -> None:
    """The set-up block ran in ``fresh_install``; here the "Commands" block, in order, from an
    empty directory."""
    lines = readme_block("ledgerbridge init ")
    assert [subcommand(line) for line in lines] == [
        "init", "sandbox", "db", "doctor", "sync", "status", "run", "tax-rates", "bill-run"], lines
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "LEDGERBRIDGE_CONFIG",
                        "LEDGERBRIDGE_DATABASE_URL", "REQUESTS_CA_BUNDLE")}
    env["PATH"] = os.pathsep.join([str(fresh_install), env.get("PATH", "")])
    env["SF_CLIENT_SECRET"] = "not-used-the-sandbox-config-replaces-init-s"
    running: list[Background] = []
    try:
        for line in lines:
            name = subcommand(line)
            if name == "sandbox":
                running.append(Background(line, tmp_path, env, STARTED[name]))
                continue
            if name == "run":
                daemon = Background(line, tmp_path, env, STARTED[name])
                assert daemon.stop() == 0, daemon.output
                continue
            done = _run(line, tmp_path, env, timeout=120)
            out = done.stdout + done.stderr
            assert done.returncode == 0, f"{line}\n{out}"
            if name == "sync":
                assert re.search(r"run \d+ sf: ok", out) and re.search(r"run \d+ d365: ok",
                                                                        out), out
            if name == "init":
                assert (tmp_path / "lb.toml").exists()
            if name == "tax-rates":
                assert re.search(r"imported \d+ tax rates, errors 0", out), out
            if name == "bill-run":
                summary = re.search(r"would create (\d+) invoices", done.stdout)
                assert summary and int(summary[1]) > 0, out
    finally:
        for proc in running:
            proc.stop()

