"""ledgerbridge's hands on the CRM: one interface (`connectors.base.Connector`) for every CRM.

Layout:
- `base`        the interface, `Page` / `Deletion` / `WriteResult` / `Budget` / `CheckResult`,
                and the error types (`RetriableError`, `FatalError`, `AuthError`,
                `ConflictError`, `BudgetExhausted`).
- `transport`   the one HTTP path (timeouts, CA bundle, retry, status classes, call log);
  `budget`      the API allowance meter.
- `settings`    typed connection config; `credentials` secrets from env / secrets file.
- `fieldmap`    TOML field maps (config/fieldmaps/) and value conversion; `cursor` cursors.
- `salesforce/`, `dynamics/`  the two connectors; `registry` builds one from its settings and
                `doctor_report` checks one for `ledgerbridge doctor`.
- `sandbox/`    the local stand-in CRM used by tests, demo and benchmarks.

Connectors know nothing of billing: they hand out and accept plain dicts keyed by the canonical
names of docs/FIELDS.md. Nothing here does work at import time.
"""
