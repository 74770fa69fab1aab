"""A config file at start-up: read once, checked whole, and a bad one stops every command with
exit code 2 and one line naming the key, before a database is opened or a connector built."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from config.settings import ConfigError, Settings, load_settings
from jobs.cli import main


def test_no_file_means_every_default(tmp_path: Path) -> None:
    assert load_settings(None, env={}) == Settings()
    path = tmp_path / "c.toml"
    path.write_text("")
    assert load_settings(path, env={}) == Settings()


def test_the_file_can_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[sync]\npush_batch_size = 50\n")
    settings = load_settings(None, env={"LEDGERBRIDGE_CONFIG": str(path)})
    assert settings.sync.push_batch_size == 50


def test_a_missing_unreadable_or_malformed_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path, env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[credit\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(bad, env={})


@pytest.mark.parametrize("text,key", [
    ('[sync]\ninterval_minutes = "5"\n', "sync.interval_minutes = '5'"),
    ("[sync]\npush_batch_size = -3\n", "sync.push_batch_size = -3"),
    ('[billing]\ntax_mode = "inclusive"\n', "billing.tax_mode = 'inclusive'"),
    ("[credit]\nthreshold = 1\n", "credit.threshold = 1"),
    ('[provisioner]\nkinds = "log"\n', "provisioner.kinds = 'log'"),
    ('[connections.x]\ncrm = "salesforce"\nurl = "https://x.example.com"\ncolour = "red"\n',
     "connections.x.colour = 'red'"),
    ("[syncs]\ninterval_minutes = 5\n", "syncs = {'interval_minutes': 5}"),
    # bounded: passed the check, then every write died in credit control's commit hook
    # (timedelta OverflowError), the scheduler or a SQL LIMIT
    ("[credit]\noverdue_grace_days = 99999999999\n",
     "credit.overdue_grace_days = 99999999999"),
    ("[sync]\ninterval_minutes = 1e300\n", "sync.interval_minutes = 1e+300"),
    ("[billing]\nbill_run_chunk_size = 9223372036854775808\n",
     "billing.bill_run_chunk_size = 9223372036854775808"),
    ("[email]\nmax_attempts = 100000\n", "email.max_attempts = 100000"),
])
@pytest.mark.parametrize("command", [["status"], ["doctor"], ["invoices", "list"]])
def test_a_bad_config_stops_any_command_before_it_runs(tmp_path: Path, text: str, key: str,
                                                        command: list[str]) -> None:
    config, database = tmp_path / "c.toml", tmp_path / "ledger.db"
    config.write_text(text)
    result = CliRunner().invoke(main, ["--config", str(config), "--database-url",
                                       f"sqlite:///{database}", *command])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: config: {key}: ")
    assert not database.exists()            # nothing ran: no database was opened or migrated


def test_a_config_file_given_but_missing_stops_even_the_demo(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "nope.toml"), "demo"])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr and "Seeded" not in result.stdout


def test_a_write_under_an_overlong_grace_period_is_refused_at_start(tmp_path: Path) -> None:
    """``[credit] overdue_grace_days = 99999999999`` passed the config check, then every write
    ended in a traceback from credit control's commit hook (timedelta overflow), exit 1."""
    config, database = tmp_path / "c.toml", tmp_path / "ledger.db"
    assert CliRunner().invoke(main, ["--database-url", f"sqlite:///{database}", "db",
                                     "upgrade"]).exit_code == 0
    config.write_text(f'[database]\nurl = "sqlite:///{database}"\n'
                      "[credit]\noverdue_grace_days = 99999999999\n")
    result = CliRunner().invoke(main, ["--config", str(config), "accounts", "add", "--name",
                                       "B", "--currency", "USD", "--ext-id", "B1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "error: config: credit.overdue_grace_days = 99999999999: must be at most 3650"]
    config.write_text(f'[database]\nurl = "sqlite:///{database}"\n'
                      "[credit]\noverdue_grace_days = 3650\n")
    result = CliRunner().invoke(main, ["--config", str(config), "accounts", "add", "--name",
                                       "B", "--currency", "USD", "--ext-id", "B1"])
    assert result.exit_code == 0, result.output
