"""Log lines of the command line (issue 15, item 7): ``--log-format json`` (or
``LEDGERBRIDGE_LOG_FORMAT``) for every command, with the run and connection a line is about;
alembic's lines only with -vv. Regression: ``db upgrade -v`` printed alembic's INFO lines
between ours, and only ``run`` could write JSON."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from jobs.cli import main


def _cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_alembic_speaks_only_with_vv(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    quiet = _cli("-v", "--database-url", url, "db", "upgrade")
    assert quiet.exit_code == 0, quiet.output
    assert "alembic" not in quiet.stderr
    loud = _cli("-vv", "--database-url", f"sqlite:///{tmp_path / 'm.db'}", "db", "upgrade")
    assert "alembic.runtime.migration" in loud.stderr


def test_json_log_lines_carry_the_run_and_the_connection(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "l.db"}"\n'
                      f'[connections.sf]\ncrm = "salesforce"\nurl = "https://127.0.0.1:{port}"\n'
                      'max_attempts = 1\nconnect_timeout = 1.0\n'
                      '[connections.sf.credentials]\nclient_id = "id"\n'
                      'client_secret = "env:LB_LOG_SECRET"\n')
    result = _cli("--config", str(config), "sync", "--json",
                  env={"LEDGERBRIDGE_LOG_FORMAT": "json", "LB_LOG_SECRET": "hunter2"})
    (run,) = json.loads(result.stdout)
    lines = _json_lines(result.stderr)
    assert lines, result.stderr
    assert all(set(line) >= {"time", "level", "logger", "message"} for line in lines)
    failed = [line for line in lines if line["message"].startswith("sync object failed")]
    assert {line["object"] for line in failed} == {"account", "product", "price", "quote",
                                                   "quote_line"}   # one line each, not limited
    assert all((line["run_id"], line["connection"], line["level"]) == (run["run_id"], "sf",
                                                                       "WARNING")
               for line in failed)
    assert "hunter2" not in result.stderr + result.stdout
