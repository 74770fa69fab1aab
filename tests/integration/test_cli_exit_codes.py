"""The exit-code contract (``jobs.cli.exits``; issue 15, item 1): 0 done and clean, 1 done with
something needing attention, 2 bad input or configuration (one line, nothing written), 3 a
dependency unreachable after bounded retries, 130 interrupted.

Regressions: a sync whose connection had a missing secret exited 0 with ``--json`` (and 1
otherwise), ``sync --account NOPE`` reported success, ``--account ''`` ran a full sync, and
``--account`` without ``-c`` tried every connection."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connectors.sandbox.server import Sandbox
from jobs.cli import exits, main
from jobs.cli.common import AppContext
from jobs.cli.demo_crm import sandbox_config


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(accounts=5, quotes=2, sides=("salesforce",)) as sbx:
        yield sbx


def _cli(*args: str, config: Path | None = None, env: dict[str, str] | None = None) -> Result:
    pre = ["--config", str(config)] if config else []
    return CliRunner().invoke(main, [*pre, *args], env=env)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _config(tmp_path: Path, secret: str, url: str, extra: str = "") -> Path:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "ledger.db"}"\n'
        f'[connections.sf]\ncrm = "salesforce"\nurl = "{url}"\nmax_attempts = 2\n'
        f'max_retry_seconds = 1\nconnect_timeout = 1.0\n{extra}'
        f'[connections.sf.credentials]\nclient_id = "id"\nclient_secret = "{secret}"\n')
    return config


@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_a_missing_secret_is_a_configuration_error(tmp_path: Path, monkeypatch,
                                                   as_json: list[str]) -> None:
    monkeypatch.delenv("LB_NO_SUCH_SECRET", raising=False)
    config = _config(tmp_path, "env:LB_NO_SUCH_SECRET", "https://sf.example")
    result = _cli("sync", *as_json, config=config)
    assert result.exit_code == exits.BAD_INPUT, result.output
    if as_json:
        (run,) = json.loads(result.stdout)
        assert run["outcome"] == "failed" and run["cause"] == "config"


def test_a_crm_that_does_not_answer_is_unreachable(tmp_path: Path) -> None:
    config = _config(tmp_path, "env:LB_EXIT_SECRET", f"https://127.0.0.1:{_closed_port()}")
    result = _cli("sync", "--json", config=config, env={"LB_EXIT_SECRET": "s"})
    assert result.exit_code == exits.UNREACHABLE, result.output
    (run,) = json.loads(result.stdout)
    assert run["cause"] == "unreachable"


@pytest.mark.parametrize(("args", "says"), [
    (["--account", ""], "must not be empty"),
    (["--account", "   "], "must not be empty"),
    (["--account", "001X"], "name its connection with -c"),
    (["-c", "nope"], "'nope' is not configured"),
])
def test_bad_sync_options_are_refused_before_anything_runs(tmp_path: Path, args: list[str],
                                                           says: str) -> None:
    config = _config(tmp_path, "env:X", "https://sf.example")
    config.write_text(config.read_text() + '[connections.d365]\ncrm = "dynamics"\n'
                      'url = "https://org.example"\ntenant_id = "t"\n'
                      '[connections.d365.credentials]\nclient_id = "i"\n'
                      'client_secret = "env:X"\n')
    result = _cli("sync", *args, config=config)
    assert result.exit_code == exits.BAD_INPUT
    assert says in result.output
    assert not (tmp_path / "ledger.db").exists()            # nothing ran, nothing written


def test_an_account_the_crm_does_not_have_is_bad_input(tmp_path: Path, sandbox,
                                                       monkeypatch) -> None:
    sandbox.reset()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    text, env = sandbox_config(sandbox, f"sqlite:///{tmp_path / 'ledger.db'}",
                               connections=("sf",))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "c.toml"
    config.write_text(text)
    result = _cli("sync", "-c", "sf", "--account", "001000000000NOPE", config=config)
    assert result.exit_code == exits.BAD_INPUT, result.output
    assert "account '001000000000NOPE' not found in connection 'sf'" in result.output


def test_an_unreachable_database_is_exit_3(tmp_path: Path) -> None:
    url = f"postgresql://postgres:s3cret@127.0.0.1:{_closed_port()}/x?connect_timeout=2"
    result = _cli("--database-url", url, "invoices", "list")
    assert result.exit_code == exits.UNREACHABLE, result.output
    assert result.output.startswith("error: database: cannot reach postgresql://postgres:***@")
    assert "s3cret" not in result.output


def test_ctrl_c_is_130(tmp_path: Path, monkeypatch) -> None:
    def interrupted(self: AppContext) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(AppContext, "engine", property(interrupted))
    result = _cli("--database-url", f"sqlite:///{tmp_path / 'x.db'}", "invoices", "list")
    assert result.exit_code == exits.INTERRUPTED
    assert result.output.strip() == "interrupted"


def test_worst_of_several_runs() -> None:
    assert exits.worst([0, 1, 3, 2]) == 2 and exits.worst([0, 1]) == 1
    assert exits.worst([130, 2]) == 130 and exits.worst([]) == 0
