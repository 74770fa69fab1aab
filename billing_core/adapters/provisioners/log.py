"""The ``log`` provisioner: writes one line per request (the demo default; nothing leaves the
machine). Outcome ``dispatched``."""
from __future__ import annotations

import logging
from typing import TextIO

from billing_core.adapters.provisioners.base import Outcome, ProvisioningTask

log = logging.getLogger(__name__)


class LogProvisioner:
    name = "log"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def provision(self, task: ProvisioningTask) -> Outcome:
        line = (f"provision request={task.request_id} key={task.idempotency_key} "
                f"account={task.account_id} ({task.account_ext_id}) order={task.order_ref} "
                f"sku={task.product_sku} quantity={task.quantity} change={task.change_kind}"
                f"{'' if task.effective_date is None else f' from={task.effective_date}'} "
                f"attempt={task.attempt}")
        log.info("%s", line)
        if self.stream is not None:
            self.stream.write(line + "\n")
            self.stream.flush()
        return "dispatched"
