"""The ``callback`` provisioner: hands the task to a Python callable.

This is the hook the sync uses to provision by updating a field in the CRM (billing knows no
CRM): the callable gets the task and returns ``"dispatched"`` / ``"provisioned"`` (``None``
counts as dispatched) or raises ``ProvisionError``. Any other exception is a bug in the
callable; it is turned into a retriable ``ProvisionError`` naming its type, so the request is
recorded as failed and can be retried rather than left half-sent.
"""
from __future__ import annotations

from collections.abc import Callable

from billing_core.adapters.provisioners.base import Outcome, ProvisionError, ProvisioningTask


class CallbackProvisioner:
    name = "callback"

    def __init__(self, callback: Callable[[ProvisioningTask], str | None]) -> None:
        self.callback = callback

    def provision(self, task: ProvisioningTask) -> Outcome:
        try:
            result = self.callback(task)
        except ProvisionError:
            raise
        except Exception as exc:
            raise ProvisionError(f"callback raised {type(exc).__name__}: {exc}",
                                 retriable=True) from exc
        if result in (None, "dispatched"):
            return "dispatched"
        if result == "provisioned":
            return "provisioned"
        raise ProvisionError(f"callback returned {result!r}, expected 'dispatched' or "
                             "'provisioned'", retriable=False)
