"""Provisioners: where a released provisioning request goes.

``log`` (one log line per request), ``webhook`` (signed JSON POST, see :mod:`.webhook`) or a
:class:`CallbackProvisioner` around a callable (the CRM-field provisioner the application wires).
Which one runs is the application's choice: ``jobs.provisioners.build_provisioner``.
"""
from __future__ import annotations

from billing_core.adapters.provisioners.base import (
    Outcome,
    Provisioner,
    ProvisionError,
    ProvisioningTask,
)
from billing_core.adapters.provisioners.callback import CallbackProvisioner
from billing_core.adapters.provisioners.log import LogProvisioner
from billing_core.adapters.provisioners.webhook import WebhookProvisioner

__all__ = ["CallbackProvisioner", "LogProvisioner", "Outcome", "ProvisionError", "Provisioner",
           "ProvisioningTask", "WebhookProvisioner"]
