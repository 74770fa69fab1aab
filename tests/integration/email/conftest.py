"""A real SMTP server on loopback for each email test (aiosmtpd, in a thread)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from email_helpers import Inbox, server_port, start_server


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = start_server(inbox)
    try:
        yield inbox, server_port(controller)
    finally:
        controller.stop()
