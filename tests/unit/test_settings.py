from decimal import Decimal

import pytest

from config.settings import ConfigError, load_settings


def _load(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_settings(path, env={})


def test_defaults_and_overrides(tmp_path):
    settings = _load(tmp_path, '[credit]\nlimit_threshold = "0.9"\noverdue_grace_days = 5\n')
    assert settings.credit.limit_threshold == Decimal("0.9")
    assert settings.credit.overdue_grace_days == 5
    assert settings.credit.include_unbilled_orders is True
    assert settings.database_url == "sqlite:///ledgerbridge.db"


def test_database_url_from_the_environment(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("")
    url = "postgresql://lb@db/ledger"
    assert load_settings(path, env={"LEDGERBRIDGE_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("text,needle", [
    ('[credit]\nlimit_threshold = "abc"\n', "limit_threshold='abc' is not a number"),
    ('[credit]\nlimit_threshold = "nan"\n', "limit_threshold='nan' must be a number above 0"),
    ('[credit]\nlimit_threshold = "-1"\n', "must be a number above 0"),
    ('[credit]\noverdue_grace_days = "5"\n', "overdue_grace_days='5' must be an integer"),
    ('[credit]\ninclude_unbilled_orders = "yes"\n', "must be true or false"),
    ('[credit]\nthreshold = 1\n', "unknown key(s): threshold"),
    ('[credit\n', "is not valid TOML"),
])
def test_bad_settings_name_the_key_and_value(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert needle in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_a_setting_billing_does_not_honour_is_refused_not_ignored(tmp_path):
    # a switch that did nothing would mislead: an unknown key is an error, not ignored
    with pytest.raises(ConfigError, match="unknown key"):
        _load(tmp_path, "[billing]\ntax_mode = \"inclusive\"\n")


def test_tax_inclusive_is_off_by_default_and_must_be_a_boolean(tmp_path):
    assert _load(tmp_path, "").billing.tax_inclusive is False
    assert _load(tmp_path, "[billing]\ntax_inclusive = true\n").billing.tax_inclusive is True
    with pytest.raises(ConfigError, match="tax_inclusive"):
        _load(tmp_path, "[billing]\ntax_inclusive = \"yes\"\n")
