"""SMTP over TLS (issue 16, item 3: "STARTTLS/TLS"), against a real server on loopback whose
certificate a test CA signed (trustme): STARTTLS on the submission model and implicit TLS
both deliver when ``[email] ca_bundle`` names that CA; without it the server is not trusted,
which is a configuration error naming the host and the setting (``email send`` exits 2) and
the emails stay queued; an unreadable bundle names ``ca_bundle``. SQLite and PostgreSQL."""
from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from aiosmtpd.controller import Controller
from email_helpers import Inbox, billed_ledger, free_port, settings_for
from sqlalchemy import Engine

from billing_core.service import ledger_uow
from billing_core.service.email_outbox import list_emails
from jobs.mailer import send_pending


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, str]:
    authority = trustme.CA()
    pem = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(pem))
    return authority, str(pem)


def _server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(params=["starttls", "tls"])
def tls_smtp(request: pytest.FixtureRequest, ca: tuple[trustme.CA, str]
             ) -> Iterator[tuple[Inbox, int, str]]:
    inbox, context = Inbox(), _server_context(ca[0])
    if request.param == "starttls":
        controller = Controller(inbox, hostname="127.0.0.1", port=free_port(),
                                tls_context=context, require_starttls=True)
    else:
        controller = Controller(inbox, hostname="127.0.0.1", port=free_port(),
                                ssl_context=context, server_hostname="127.0.0.1")
    controller.start()
    try:
        yield inbox, int(controller.port), request.param
    finally:
        controller.stop()


def _queued(engine: Engine) -> int:
    with ledger_uow(engine, read_only=True) as uow:
        return len(list_emails(uow.conn, state="queued"))


def test_tls_delivers_with_the_ca_and_refuses_without(engine: Engine, ca: tuple[trustme.CA, str],
                                                      tls_smtp: tuple[Inbox, int, str]) -> None:
    inbox, port, security = tls_smtp
    billed_ledger(engine, 2)
    untrusted = send_pending(engine, settings_for(port, security=security))
    assert untrusted.sent == 0 and _queued(engine) == 2 and inbox.messages == []
    assert untrusted.config_error is not None
    assert "host '127.0.0.1'" in untrusted.config_error
    assert "set ca_bundle" in untrusted.config_error
    trusted = send_pending(engine, settings_for(port, security=security, ca_bundle=ca[1]))
    assert (trusted.sent, trusted.config_error) == (2, None)
    assert sorted(m["Subject"] for m in inbox.parsed()) == [
        "Invoice INV-000001 from Northwind Billing Ltd",
        "Invoice INV-000002 from Northwind Billing Ltd"]


def test_an_unreadable_bundle_names_the_setting(sqlite_engine: Engine, tmp_path: Path,
                                                tls_smtp: tuple[Inbox, int, str]) -> None:
    _inbox, port, security = tls_smtp
    billed_ledger(sqlite_engine, 1)
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("hello\n")
    report = send_pending(sqlite_engine, settings_for(port, security=security,
                                                      ca_bundle=str(bad)))
    assert report.config_error == f"[email] ca_bundle = {str(bad)!r}: cannot be read as PEM " \
                                  "certificates (SSLError)"
    assert report.sent == 0 and _queued(sqlite_engine) == 1
