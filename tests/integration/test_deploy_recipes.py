"""The service recipes in deploy/ are checked as far as this machine allows (issue 15, item 6).

- The systemd unit passes ``systemd-analyze verify`` (when the tool is installed). Verify
  refuses an ``ExecStart=`` binary that does not exist, and the unit names where a production
  install puts it (/opt/ledgerbridge/venv), so the test verifies a temporary copy whose binary is
  this venv's real ``ledgerbridge``; everything else is the file as shipped. ``User=`` stays: an
  unknown user is not an error for verify. Verify reports unknown keys and bad values as
  warnings with exit code 0, so any output at all fails the test.
- The unit keeps its hardening, and its commands are ones the CLI really has (click parses
  them, option values included, without running anything).
- The Containerfile and compose file parse and run the very same commands as the unit; the
  image's health check asks an endpoint the API serves. Nothing is built or pulled.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import click
import pytest
import yaml

from config.settings import load_settings
from jobs.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "ledgerbridge.service"
INSTALLED_BINARY = "/opt/ledgerbridge/venv/bin/ledgerbridge"
DATA_DIR = "/var/lib/ledgerbridge"


def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file, each a list of (key, value) in file order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"entry outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def service() -> dict[str, str]:
    entries = unit_entries(UNIT.read_text(encoding="utf-8"))["Service"]
    keys = [k for k, _ in entries]
    assert len(keys) == len(set(keys)), "a key set twice in [Service]"
    return dict(entries)


def unit_command(key: str) -> list[str]:
    """The arguments after the binary of ExecStart / ExecStartPre."""
    argv = shlex.split(service()[key])
    assert argv[0] == INSTALLED_BINARY
    return argv[1:]


def _unparsed(ctx: click.Context) -> list[str]:
    """What a group left for its subcommand (click 8 splits it in two; 9 will merge them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*ctx.protected_args, *ctx.args]


def assert_cli_accepts(args: list[str]) -> None:
    """click parses ``args`` as the CLI would (unknown commands, options and bad values fail)."""
    with main.make_context("ledgerbridge", list(args)) as ctx:
        rest = _unparsed(ctx)
        command: click.Command = main
        parent = ctx
        while rest:
            assert isinstance(command, click.Group), f"{command.name} has no subcommand {rest}"
            name, cmd, rest = command.resolve_command(parent, rest)
            assert cmd is not None, f"no command {name!r}"
            sub = cmd.make_context(name, rest, parent=parent)
            rest = _unparsed(sub) if isinstance(cmd, click.Group) else []
            command, parent = cmd, sub


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    binary = Path(sys.executable).parent / "ledgerbridge"
    assert binary.exists(), "the venv has no ledgerbridge script (pip install -e .)"
    copy = tmp_path / "ledgerbridge.service"
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(binary)),
                    encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_verify_reports_a_misspelt_key(tmp_path: Path) -> None:
    """What the test above relies on: verify prints something for a mistake in the unit."""
    binary = Path(sys.executable).parent / "ledgerbridge"
    copy = tmp_path / "ledgerbridge.service"
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(binary))
                    .replace("ProtectSystem=", "ProtectSytem="), encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert "ProtectSytem" in done.stdout + done.stderr


def test_unit_is_hardened() -> None:
    s = service()
    assert s["User"] and s["User"] != "root"
    assert s["ProtectSystem"] == "strict"
    assert DATA_DIR in s["ReadWritePaths"].split()
    assert s["WorkingDirectory"] == DATA_DIR
    assert s["NoNewPrivileges"] == "yes"
    assert s["PrivateTmp"] == "yes"
    assert s["Restart"] == "on-failure"
    assert 5 <= int(s["RestartSec"].removesuffix("s")) <= 60
    assert s["EnvironmentFile"].startswith("/etc/ledgerbridge/")
    assert s["CapabilityBoundingSet"] == ""


def test_unit_runs_commands_the_cli_has() -> None:
    start, pre = unit_command("ExecStart"), unit_command("ExecStartPre")
    assert start[:2] == ["--config", "/etc/ledgerbridge/ledgerbridge.toml"] and "run" in start
    assert pre == ["--config", "/etc/ledgerbridge/ledgerbridge.toml", "db", "upgrade"]
    assert_cli_accepts(start)
    assert_cli_accepts(pre)


def test_cli_check_refuses_what_the_cli_refuses() -> None:
    with pytest.raises(click.UsageError):
        assert_cli_accepts(["--config", "x.toml", "run", "--log-format", "yaml"])
    with pytest.raises(click.UsageError):
        assert_cli_accepts(["--config", "x.toml", "daemon"])
    with pytest.raises(click.UsageError):
        assert_cli_accepts(["--config", "x.toml", "run", "--foreground"])


def containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Containerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Containerfile").read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def test_containerfile_runs_the_unit_command_as_a_user() -> None:
    steps = containerfile()
    known = {"FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "HEALTHCHECK", "STOPSIGNAL",
             "ENTRYPOINT", "CMD", "EXPOSE", "VOLUME", "LABEL", "ARG"}
    assert {i for i, _ in steps} <= known
    assert steps[0] == ("FROM", "docker.io/library/python:3.11-slim")
    users = [a for i, a in steps if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user = max(n for n, (i, _) in enumerate(steps) if i == "USER")
    assert all(i != "RUN" for i, _ in steps[last_user:]), "RUN after USER would run as the user"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"]["optional-dependencies"]
    assert "postgres" in extras
    assert any(i == "RUN" and "pip install '.[postgres]'" in a for i, a in steps)
    for i, a in steps:
        if i == "COPY":
            *sources, _ = a.split()
            assert all((ROOT / s).exists() for s in sources), a
    entry = [a for i, a in steps if i == "ENTRYPOINT"]
    cmd = [a for i, a in steps if i == "CMD"]
    assert len(entry) == 1 and len(cmd) == 1
    assert yaml.safe_load(entry[0]) == ["ledgerbridge"]
    assert yaml.safe_load(cmd[0]) == unit_command("ExecStart")


def test_containerfile_health_check_asks_the_liveness_endpoint() -> None:
    from jobs.api import routes_ops

    (check,) = [a for i, a in containerfile() if i == "HEALTHCHECK"]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", check)
    assert url is not None, check
    port = main.get_command(click.Context(main), "run").params  # type: ignore[union-attr]
    assert int(url[1]) == next(p.default for p in port if p.name == "api_port")
    assert url[2] in {route.path for route in routes_ops.routes.routes}  # type: ignore[attr-defined]


def test_compose_file_runs_the_daemon_and_postgresql() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"db", "upgrade", "ledgerbridge"}
    assert services["db"]["image"].split("/")[-1].startswith("postgres:")
    assert services["ledgerbridge"]["command"] == unit_command("ExecStart")
    assert services["upgrade"]["command"] == unit_command("ExecStartPre")
    assert services["ledgerbridge"]["depends_on"]["upgrade"]["condition"] \
        == "service_completed_successfully"
    build = services["upgrade"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Containerfile"
    assert services["upgrade"]["image"] == services["ledgerbridge"]["image"]
    for name, svc in services.items():
        for env_file in svc.get("env_file", []):
            assert (DEPLOY / f"{env_file}.example").exists(), (name, env_file)
        assert "environment" not in svc or not any(
            "PASSWORD" in k and not k.endswith("_FILE") for k in svc["environment"]), name
    for mount in services["ledgerbridge"]["volumes"]:
        source, target = mount.split(":")[:2]
        if source.startswith("./"):
            assert target == "/etc/ledgerbridge/ledgerbridge.toml"
            assert (DEPLOY / "ledgerbridge.example.toml").exists()


def test_example_config_loads_and_its_secrets_are_in_the_env_example() -> None:
    env_example = (DEPLOY / "ledgerbridge.env.example").read_text(encoding="utf-8")
    env = dict(line.split("=", 1) for line in env_example.splitlines()
               if line and not line.startswith("#"))
    settings = load_settings(DEPLOY / "ledgerbridge.example.toml", env=env)
    assert settings.database_url == env["LEDGERBRIDGE_DATABASE_URL"]
    refs = re.findall(r'"env:(\w+)"', (DEPLOY / "ledgerbridge.example.toml").read_text(
        encoding="utf-8"))
    assert refs and set(refs) <= set(env)
