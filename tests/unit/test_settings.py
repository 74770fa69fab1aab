"""Settings: every section checked the same way, from parsed TOML (no files: see
tests/integration/test_config_file.py for reading them)."""
import tomllib
from decimal import Decimal

import pytest

from config.settings import ConfigError, Settings, SyncSettings, parse_settings
from connectors.base import OBJECTS


def _parse(text: str, env: dict[str, str] | None = None) -> Settings:
    return parse_settings(tomllib.loads(text), env={} if env is None else env)


def _refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_no_file_means_every_dataclass_default() -> None:
    assert _parse("") == Settings()
    assert Settings().database_url == "sqlite:///ledgerbridge.db"
    assert Settings().sync.objects == OBJECTS and Settings().connections == {}


def test_defaults_and_overrides() -> None:
    settings = _parse('[credit]\nlimit_threshold = "0.9"\noverdue_grace_days = 5\n')
    assert settings.credit.limit_threshold == Decimal("0.9")
    assert settings.credit.overdue_grace_days == 5
    assert settings.credit.include_unbilled_orders is True


def test_database_url_from_the_file_and_the_environment() -> None:
    assert _parse('[database]\nurl = "sqlite:///x.db"\n').database_url == "sqlite:///x.db"
    url = "postgresql://lb@db/ledger"
    assert _parse('[database]\nurl = "sqlite:///x.db"\n',
                  {"LEDGERBRIDGE_DATABASE_URL": url}).database_url == url


def test_sync_and_connections_are_typed_parts_of_the_settings() -> None:
    settings = _parse('[sync]\ninterval_minutes = 7\nobjects = ["account", "quote"]\n'
                      '[connections.sf]\ncrm = "salesforce"\nurl = "https://x.example.com/"\n'
                      '[connections.sf.credentials]\nclient_secret = "env:SF_SECRET"\n')
    assert settings.sync == SyncSettings(interval_minutes=7.0, objects=("account", "quote"))
    assert settings.sync.push_batch_size == 1000
    sf = settings.connections["sf"]
    assert (sf.crm, sf.url, sf.auth, sf.page_size) == (
        "salesforce", "https://x.example.com", "client_credentials", 2000)


@pytest.mark.parametrize("text,message", [
    # wrong type
    ('[sync]\ninterval_minutes = "5"\n', "sync.interval_minutes = '5': must be a number"),
    ("[sync]\npush_batch_size = true\n", "sync.push_batch_size = True: must be an integer"),
    ("[sync]\npush_batch_size = 2.5\n", "sync.push_batch_size = 2.5: must be an integer"),
    ('[sync]\nwrite_crm_hold = "yes"\n', "sync.write_crm_hold = 'yes': must be true or false"),
    ('[sync]\nobjects = "account"\n', "sync.objects = 'account': must be a list of strings"),
    ("[billing]\ninvoice_series = 7\n", "billing.invoice_series = 7: must be a string"),
    ('[credit]\nlimit_threshold = "abc"\n', "credit.limit_threshold = 'abc': must be a number"),
    ('[credit]\nlimit_threshold = "nan"\n', "credit.limit_threshold = 'nan': must be a number"),
    ("[credit]\nlimit_threshold = true\n", "credit.limit_threshold = True: must be a number"),
    ('[credit]\noverdue_grace_days = "5"\n',
     "credit.overdue_grace_days = '5': must be an integer"),
    ('[credit]\ninclude_unbilled_orders = "yes"\n',
     "credit.include_unbilled_orders = 'yes': must be true or false"),
    ('[provisioner]\ntimeout_seconds = "10"\n',
     "provisioner.timeout_seconds = '10': must be a number"),
    ('[database]\nurl = 5\n', "database.url = 5: must be a string"),
    ("billing = 5\n", "billing = 5: must be a table"),
    # out of range
    ("[sync]\npush_batch_size = -3\n", "sync.push_batch_size = -3: must be at least 1"),
    ("[sync]\ninterval_minutes = 0\n", "sync.interval_minutes = 0: must be above 0"),
    ("[sync]\npush_max_attempts = 0\n", "sync.push_max_attempts = 0: must be at least 1"),
    ("[sync]\nmisfire_grace_seconds = 0\n",
     "sync.misfire_grace_seconds = 0: must be at least 1"),
    ('[sync]\nbill_run_time = "25:00"\n', "sync.bill_run_time = '25:00': must be HH:MM"),
    ('[sync]\nbill_run_time = "2 am"\n', "sync.bill_run_time = '2 am': must be HH:MM"),
    ('[sync]\nobjects = ["account", "invoice"]\n', "each must be one of 'account'"),
    ("[sync]\nobjects = []\n", "sync.objects = []: must not be empty"),
    ("[billing]\ndefault_bill_cycle_day = 1\n",
     "billing.default_bill_cycle_day = 1: unknown key"),
    ("[billing]\nbill_run_chunk_size = 0\n", "billing.bill_run_chunk_size = 0: must be at least 1"),
    ('[billing]\ninvoice_series = ""\n', "billing.invoice_series = '': must not be empty"),
    ('[credit]\nlimit_threshold = "-1"\n', "credit.limit_threshold = '-1': must be above 0"),
    ('[credit]\nlimit_threshold = 0\n', "credit.limit_threshold = 0: must be above 0"),
    ("[credit]\noverdue_grace_days = -1\n", "credit.overdue_grace_days = -1: must be at least 0"),
    ('[provisioner]\nkind = "carrier-pigeon"\n',
     "provisioner.kind = 'carrier-pigeon': must be one of 'log', 'webhook', 'crm'"),
    ("[provisioner]\nmax_attempts = 0\n", "provisioner.max_attempts = 0: must be at least 1"),
    ("[provisioner]\ntimeout_seconds = -1.5\n",
     "provisioner.timeout_seconds = -1.5: must be above 0"),
    # unknown keys, in every section and at the top level
    ('[billing]\ntax_mode = "inclusive"\n', "billing.tax_mode = 'inclusive': unknown key"),
    ("[credit]\nthreshold = 1\n", "credit.threshold = 1: unknown key"),
    ('[provisioner]\nkinds = "log"\n', "provisioner.kinds = 'log': unknown key (did you mean 'kind'?)"),
    ("[sync]\ninterval = 5\n", "sync.interval = 5: unknown key"),
    ('[database]\nuri = "sqlite://"\n', "database.uri = 'sqlite://': unknown key"),
    ('[syncs]\ninterval_minutes = 5\n', "syncs = {'interval_minutes': 5}: unknown key"),
    ("interval_minutes = 5\n", "interval_minutes = 5: unknown key"),
])
def test_a_bad_setting_is_one_line_naming_the_dotted_key_and_the_value(text: str,
                                                                        message: str) -> None:
    assert message in _refused(text)


CONNECTION = '[connections.x]\ncrm = "salesforce"\nurl = "https://x.example.com"\n'


@pytest.mark.parametrize("extra,message", [
    ("pagesize = 5\n", "connections.x.pagesize = 5: unknown key (did you mean 'page_size'?)"),
    ('page_size = "5"\n', "connections.x.page_size = '5': must be an integer"),
    ("page_size = 0\n", "connections.x.page_size = 0: must be at least 1"),
    ("page_size = 2001\n", "connections.x.page_size = 2001: must be at most 2000 for salesforce"),
    ("budget_share = 1.5\n", "connections.x.budget_share = 1.5: must be at most 1"),
    ("read_timeout = 0\n", "connections.x.read_timeout = 0: must be above 0"),
    # upper bounds: each of these passed the check and then failed the first CRM call or the
    # first incremental read with an OverflowError (socket timeout, cursor window)
    ("connect_timeout = 1e300\n", "connections.x.connect_timeout = 1e+300: must be at most 600"),
    ("read_timeout = 3600.5\n", "connections.x.read_timeout = 3600.5: must be at most 3600"),
    ("overlap_seconds = 1000000000000\n",
     "connections.x.overlap_seconds = 1000000000000: must be at most 2592000"),
    ("max_attempts = 1000000\n", "connections.x.max_attempts = 1000000: must be at most 100"),
    ("max_retry_seconds = 1e12\n",
     "connections.x.max_retry_seconds = 1000000000000.0: must be at most 86400"),
    ('validate_authority = "no"\n', "connections.x.validate_authority = 'no': must be true or"),
    ('auth = "jwt-please"\n', "connections.x.auth = 'jwt-please': must be one of"),
    ("credentials = 5\n", "connections.x.credentials = 5: must be a table"),
    ('client_secret = "plain-text"\n', "connections.x.client_secret = '***': unknown key"),
])
def test_a_bad_connection_table_names_its_dotted_key(extra: str, message: str) -> None:
    assert message in _refused(CONNECTION + extra)


def test_a_connection_needs_its_crm_and_url() -> None:
    assert "connections.x.url is missing" in _refused('[connections.x]\ncrm = "salesforce"\n')
    assert "connections.x.crm is missing" in _refused('[connections.x]\nurl = "https://x"\n')
    assert "connections.x.crm = 'sap': must be one of" in _refused(
        '[connections.x]\ncrm = "sap"\nurl = "https://x"\n')
    assert "connections.x.tenant_id is missing" in _refused(
        '[connections.x]\ncrm = "dynamics"\nurl = "https://x"\n')
    assert "connections.x = 5: must be a table" in _refused("[connections]\nx = 5\n")


def test_a_literal_secret_is_refused_without_showing_it() -> None:
    message = _refused(CONNECTION + '[connections.x.credentials]\nclient_secret = "hunter2"\n')
    assert "client_secret" in message and "hunter2" not in message
