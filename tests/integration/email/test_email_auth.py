"""SMTP credentials (issue 16, item 3): the password is an ``env:`` reference resolved when the
connection opens; refused credentials or a missing secret end the run as a configuration error
(exit 2) and leave the emails queued. A loopback aiosmtpd that requires AUTH (plain text on
loopback: TLS is not tested here)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from email_helpers import Inbox, billed_ledger, free_port, settings_for
from sqlalchemy import Engine

from billing_core.service import ledger_uow
from billing_core.service.email_outbox import list_emails
from jobs.mailer import MailConfigError, SmtpClient, send_pending

# AUTH without TLS, on loopback only: the server warns about it
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.password in (b"s3cret", "s3cret")
    return AuthResult(success=ok, handled=False)    # not handled: the server answers 535


@pytest.fixture
def auth_smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(),
                            authenticator=_authenticator, auth_required=True,
                            auth_require_tls=False)
    controller.start()
    try:
        yield inbox, int(controller.port)
    finally:
        controller.stop()


def _queued(engine: Engine) -> int:
    with ledger_uow(engine, read_only=True) as uow:
        return len(list_emails(uow.conn, state="queued"))


def test_login_with_an_env_secret(sqlite_engine: Engine, auth_smtp: tuple[Inbox, int],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    inbox, port = auth_smtp
    billed_ledger(sqlite_engine, 2)
    monkeypatch.setenv("LB_TEST_SMTP_PW", "wrong")
    settings = settings_for(port, username="billing", password="env:LB_TEST_SMTP_PW")
    refused = send_pending(sqlite_engine, settings)
    assert refused.config_error == "[email] username 'billing': the server refused the " \
                                   "credentials (535)"
    assert refused.sent == 0 and _queued(sqlite_engine) == 2
    monkeypatch.setenv("LB_TEST_SMTP_PW", "s3cret")
    assert send_pending(sqlite_engine, settings).sent == 2 and len(inbox.messages) == 2


def test_a_missing_secret_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LB_TEST_SMTP_NONE", raising=False)
    settings = settings_for(free_port(), username="billing", password="env:LB_TEST_SMTP_NONE")
    with pytest.raises(MailConfigError, match="LB_TEST_SMTP_NONE"):
        SmtpClient(settings.email).open()
