"""Build a connector from its connection settings; `doctor_report` for `ledgerbridge doctor`.

Rules: nothing connects here (logins happen on first use); credentials are resolved only when a
connector logs in; each connection gets its own `Transport` and budget meter, so several
connections (a Salesforce org and a Dynamics environment) run side by side in one worker.
`sleep` and `clock` are injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from connectors import credentials, fieldmap
from connectors.base import CheckResult, Connector, ConnectorError
from connectors.budget import BudgetMeter
from connectors.settings import ConnectionSettings
from connectors.transport import Transport


def _transport(s: ConnectionSettings, budget: BudgetMeter, sleep: Callable[[float], None],
               **kw: Any) -> Transport:
    return Transport(name=s.name, timeout=s.timeout, ca_bundle=s.ca_bundle,
                     max_attempts=s.max_attempts, max_retry_seconds=s.max_retry_seconds,
                     budget=budget, sleep=sleep, **kw)


def build_connector(settings: ConnectionSettings, *, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                    environ: dict[str, str] | None = None) -> Connector:
    fmap = fieldmap.load(settings.fieldmap, settings.fieldmap_overrides)
    budget = BudgetMeter(settings.budget_share)

    def creds() -> dict[str, Any]:
        return credentials.resolve(settings.name, settings.credentials, settings.secrets_file,
                                   environ)

    if settings.crm == "salesforce":
        from connectors.salesforce.connector import SalesforceConnector, classify

        transport = _transport(settings, budget, sleep, classify=classify)
        return SalesforceConnector(settings, fmap, transport, creds, clock)
    from connectors.dynamics.auth import TokenProvider
    from connectors.dynamics.connector import DynamicsConnector

    data = _transport(settings, budget, sleep)
    tokens = TokenProvider(settings, creds, _transport(settings, budget, sleep,
                                                       raise_errors=False))
    return DynamicsConnector(settings, fmap, data, tokens, clock)


def doctor_report(settings: ConnectionSettings, **kw: Any) -> list[CheckResult]:
    """Checks of one connection, before a run: config, credentials, login, field map."""
    try:
        connector = build_connector(settings, **kw)
    except (fieldmap.FieldMapError, OSError) as exc:
        return [CheckResult(settings.name, "field map", "fail", str(exc))]
    try:
        return connector.check()
    except credentials.CredentialError as exc:
        return [CheckResult(settings.name, "credentials", "fail", str(exc))]
    except ConnectorError as exc:
        return [CheckResult(settings.name, "login", "fail", str(exc))]
