"""Typed domain errors.

Every error names the field and the value that caused it, carries a stable ``code`` (the CLI
prints it, the HTTP API returns it) and means: nothing was written. The CLI turns a
``LedgerError`` into one line on stderr and exit code 2; the API maps ``NotFound`` to 404,
``ValidationError`` to 422 and every other ``LedgerError`` (a rule of the domain) to 409.
"""
from __future__ import annotations


class LedgerError(Exception):
    code = "ledger_error"

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}={value!r}: {problem}")

    def as_dict(self) -> dict[str, object]:
        value = self.value if isinstance(self.value, (str, int, bool, type(None))) else str(self.value)
        return {"code": self.code, "field": self.field, "value": value, "message": str(self)}


class ValidationError(LedgerError):
    """The input itself is malformed (422)."""
    code = "invalid_input"


class InvalidAmount(ValidationError):
    code = "invalid_amount"


class UnknownCurrency(ValidationError):
    code = "unknown_currency"

    def __init__(self, field: str, value: object) -> None:
        super().__init__(field, value, "is not a known ISO 4217 currency code")


class NotFound(LedgerError):
    code = "not_found"

    def __init__(self, field: str, value: object) -> None:
        super().__init__(field, value, "does not exist")


class RuleViolation(LedgerError):
    """The input is well-formed but breaks a ledger rule (409)."""
    code = "rule_violation"


class CurrencyMismatch(RuleViolation):
    code = "currency_mismatch"

    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(field, value, f"does not match the currency {expected}")


class Duplicate(RuleViolation):
    code = "duplicate"

    def __init__(self, field: str, value: object) -> None:
        super().__init__(field, value, "already exists")


class InvalidState(RuleViolation):
    code = "invalid_state"


class InsufficientBalance(RuleViolation):
    code = "insufficient_balance"


class MissingTaxRate(RuleViolation):
    """No tax rate for an account's country (or region) on a day: its invoice cannot be
    computed (an explicit rate of 0, or the account's tax exemption, zero-rates it)."""
    code = "missing_tax_rate"

    def __init__(self, account_id: int, country: str | None, region: str | None,
                 on: object) -> None:
        if not country:
            super().__init__("country", None, f"is not set for account {account_id}, so it has "
                             "no tax location: set its billing country (in the CRM) or mark the "
                             "account tax-exempt")
            return
        where = f"{country}/{region}" if region else country
        super().__init__("country", where, f"has no tax rate on {on} for account {account_id}: "
                         "set one (a rate of 0 zero-rates it) or mark the account tax-exempt")
