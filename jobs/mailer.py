"""Emailing documents: the SMTP side of the email outbox (``billing_core.service.email_outbox``).

Rules kept here
- Nothing is queued nor sent unless ``[email] enabled``; ``send_pending`` first queues what
  the ledger owes (documents issued on or after ``[email] since``), then sends the due rows a
  batch (one SMTP connection) at a time.
- Per row: claim (a committed ``sending`` row naming this process), render the PDF (the kept
  file of the issued document: what the customer receives is what ``render`` shows), send,
  mark ``sent``: each in its own transaction, so a kill -9 at any point loses nothing; between
  the server's acceptance and the mark a crash leaves a ``sending`` row that the next run takes
  over and sends again with the same ``Message-ID`` (the one residual at-least-once window,
  docs/DOCUMENTS.md, Email).
- SMTP via the standard library, every call under ``timeout_seconds``. A 5xx answer (to the
  sender, every recipient or the data) is permanent: ``dead`` with the server's reason. A 4xx
  answer is temporary: queued again after ``retry_base_seconds`` doubled per attempt (at most
  ``retry_max_seconds``), ``dead`` after ``max_attempts``. A server that cannot be reached or
  drops the connection ends the run: the rows not tried go back to ``queued`` untouched
  (attempts unchanged) and the run reports ``unreachable`` (exit 3). Refused credentials are
  a configuration error (exit 2); the rows go back likewise.
- The password is an ``env:``/``file:`` reference (``connectors.credentials``), resolved when
  a connection is opened, never logged.
"""
from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from functools import partial
from typing import Any

from sqlalchemy import Engine

from billing_core.domain.errors import LedgerError
from billing_core.service import email_outbox as outbox
from billing_core.service import ledger_uow
from billing_core.service.rendering import render_document
from config.settings import EmailSettings, Settings
from connectors.credentials import CredentialError, resolve

log = logging.getLogger(__name__)
#: Who a send is recorded as in the audit trail (send_pending's ``actor``).
_ACTOR: ContextVar[str] = ContextVar("mail_actor", default="system")

LABELS = {"invoice": "Invoice", "credit_memo": "Credit memo", "debit_memo": "Debit memo"}


class MailConfigError(Exception):
    """The SMTP settings cannot work (a secret missing, the credentials refused)."""


class Unreachable(Exception):
    """The SMTP server cannot be reached, or dropped the connection."""


@dataclass
class SendReport:
    queued: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    failed: int = 0
    skipped: int = 0            # reminders of documents settled before they went
    unreachable: str | None = None
    config_error: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"queued": self.queued, "sent": self.sent, "retried": self.retried,
                "dead": self.dead, "failed": self.failed, "skipped": self.skipped,
                "unreachable": self.unreachable,
                "config_error": self.config_error, "errors": self.errors}


def domain_of(settings: EmailSettings) -> str:
    return settings.from_address.rpartition("@")[2].strip(" >") or "ledgerbridge.invalid"


def subject(kind: str, doc_type: str, number: str | None, seller: str) -> str:
    label = LABELS.get(doc_type, doc_type)
    text = f"{label} {number or '(draft)'}"
    if kind.startswith("reminder_"):
        text = f"Reminder: {label.lower()} {number or ''}".rstrip()
    return f"{text} from {seller}" if seller else text


def build_message(*, sender: str, recipients: str, subject_line: str, message_id: str,
                  body: str, pdf: bytes, filename: str, now: datetime) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipients
    msg["Subject"] = subject_line
    msg["Message-ID"] = message_id
    msg["Date"] = formatdate(now.timestamp(), usegmt=True)
    msg.set_content(body)
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=filename)
    return msg


def _body(kind: str, label: str, number: str, account: str, seller: str,
          doc: dict[str, Any] | None = None) -> str:
    due = (doc or {}).get("due_date")
    if kind.startswith("reminder_"):
        when = f" on {due.isoformat()}" if isinstance(due, date) else ""
        offset = kind.removeprefix("reminder_")
        verb = "was due" if offset.isdigit() and int(offset) > 0 else "is due"
        first = f"This is a reminder that {label.lower()} {number} {verb} for payment{when}."
    else:
        first = f"Please find attached {label.lower()} {number}."
    return f"Dear {account},\n\n{first}\n\nKind regards,\n{seller or 'Billing'}\n"


class SmtpClient:
    """One SMTP connection (opened lazily), under the settings' timeout."""

    def __init__(self, settings: EmailSettings,
                 environ: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = environ
        self._smtp: smtplib.SMTP | None = None

    def _password(self) -> str | None:
        s = self.settings
        if s.password is None:
            return None
        try:
            values = resolve("email", {"password": s.password}, s.secrets_file, self.environ)
        except CredentialError as exc:
            raise MailConfigError(str(exc).replace("connection 'email'", "[email]")) from None
        return str(values["password"].reveal())

    def _tls(self) -> ssl.SSLContext:
        """The context that verifies the server: the system's CAs, or ``ca_bundle``'s."""
        bundle = self.settings.ca_bundle
        try:
            return ssl.create_default_context(cafile=bundle)
        except (OSError, ssl.SSLError) as exc:
            raise MailConfigError(f"[email] ca_bundle = {bundle!r}: cannot be read as PEM "
                                  f"certificates ({type(exc).__name__})") from None

    def open(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        s = self.settings
        password = self._password()
        context = self._tls() if s.security in ("tls", "starttls") else None
        try:
            if s.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout_seconds, context=context)
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds)
            if s.security == "starttls":
                smtp.starttls(context=context)
            if s.username:
                smtp.login(s.username, password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise MailConfigError(f"[email] username {s.username!r}: the server refused the "
                                  f"credentials ({exc.smtp_code})") from None
        except ssl.SSLCertVerificationError as exc:
            raise MailConfigError(f"[email] host {s.host!r}: its certificate is not trusted "
                                  f"({exc.verify_message}); set ca_bundle to the CA that signed "
                                  "it") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise Unreachable(f"{s.host}:{s.port}: {type(exc).__name__}: {exc}") from None
        self._smtp = smtp
        return smtp

    def send(self, msg: EmailMessage, recipients: list[str]) -> dict[str, Any]:
        """Send; returns the refused recipients (some accepted). Raises the smtplib errors."""
        smtp = self.open()
        try:
            return dict(smtp.send_message(msg, to_addrs=recipients))
        except smtplib.SMTPServerDisconnected as exc:
            self._smtp = None
            raise Unreachable(f"{self.settings.host}:{self.settings.port}: "
                              f"{type(exc).__name__}: {exc}") from None
        except smtplib.SMTPException:
            raise                   # an answer of the server (SMTPException is an OSError)
        except OSError as exc:      # a timeout, a reset connection
            self._smtp = None
            raise Unreachable(f"{self.settings.host}:{self.settings.port}: "
                              f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None


def _permanent(exc: smtplib.SMTPException) -> tuple[bool, str]:
    """(permanent, reason) of an SMTP refusal."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [int(code) for code, _ in exc.recipients.values()]
        reason = "; ".join(f"{rcpt}: {code} {msg.decode(errors='replace')}"
                           for rcpt, (code, msg) in exc.recipients.items())
        return bool(codes) and all(c >= 500 for c in codes), f"recipients refused: {reason}"
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        return exc.smtp_code >= 500, f"{exc.smtp_code} {text}"
    return False, f"{type(exc).__name__}: {exc}"


def _delay(settings: EmailSettings, attempts: int) -> float:
    return float(min(settings.retry_base_seconds * 2.0 ** max(attempts, 0),
                     settings.retry_max_seconds))


Renderer = Any      # billing_core.documents.render.Renderer (imported lazily: reportlab)


def make_renderer(settings: Settings) -> Renderer:
    from billing_core.documents.render import Renderer as _Renderer

    return _Renderer(settings.documents.render_options())


def queue(engine: Engine, settings: Settings, *, clock: Callable[[], datetime] | None = None,
          kinds: tuple[str, ...] = outbox.DOC_KINDS) -> tuple[int, list[str]]:
    """Queue the emails the ledger owes (idempotent; see the module rules): (rows, the
    errors of those failed at once)."""
    email = settings.email
    since = date.fromisoformat(email.since) if email.since else date.min
    return outbox.queue_all(lambda: ledger_uow(engine, clock=clock, policy=settings.credit),
                            since, domain=domain_of(email), kinds=kinds)


def send_pending(engine: Engine, settings: Settings, *, limit: int | None = None,
                 clock: Callable[[], datetime] | None = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 client: SmtpClient | None = None, renderer: Renderer | None = None,
                 after_accept: Callable[[int], None] | None = None,
                 actor: str = "system") -> SendReport:
    """Queue, then send the due emails (up to ``limit``) batch by batch. ``after_accept`` is
    called with the row id once the server accepted a message, before it is marked (tests
    raise there to play a crash). ``actor``: who each row's outcome (sent, dead, failed,
    skipped) is recorded as in the audit trail (``cli:<user>`` for ``email send``)."""
    token = _ACTOR.set(actor)
    try:
        return _send_pending(engine, settings, limit, clock, should_stop, client, renderer,
                             after_accept)
    finally:
        _ACTOR.reset(token)


def _send_pending(engine: Engine, settings: Settings, limit: int | None,
                  clock: Callable[[], datetime] | None, should_stop: Callable[[], bool],
                  client: SmtpClient | None, renderer: Renderer | None,
                  after_accept: Callable[[int], None] | None) -> SendReport:
    email = settings.email
    report = SendReport()
    report.queued, failed = queue(engine, settings, clock=clock)
    report.failed = len(failed)
    report.errors.extend({"id": None, "state": "failed", "error": e} for e in failed)
    client = client or SmtpClient(email)
    renderer = renderer if renderer is not None else make_renderer(settings)
    seller = settings.documents.seller_name
    left = limit
    started = clock() if clock else datetime.now(UTC)
    try:
        while left is None or left > 0:
            if should_stop():
                break
            size = email.batch_size if left is None else min(left, email.batch_size)
            with ledger_uow(engine, clock=clock) as uow:
                claimed = outbox.claim(uow, limit=size, lease_seconds=email.lease_seconds,
                                       due_by=started)
                uow.commit()
            if not claimed:
                break
            if left is not None:
                left -= len(claimed)
            _send_batch(engine, settings, claimed, client, renderer, seller, report, clock,
                        after_accept)
            if report.unreachable or report.config_error:
                break
    finally:
        client.close()
    return report


def _send_batch(engine: Engine, settings: Settings, claimed: list[outbox.Claimed],
                client: SmtpClient, renderer: Renderer, seller: str, report: SendReport,
                clock: Callable[[], datetime] | None,
                after_accept: Callable[[int], None] | None) -> None:
    email = settings.email
    for i, row in enumerate(claimed):
        with ledger_uow(engine, clock=clock, read_only=True) as uow:
            owed = outbox.still_owed(uow.conn, row.doc_type, row.doc_id, row.kind)
        if not owed:
            _finish(engine, clock, partial(outbox.mark_dead, row_id=row.id, state="skipped",
                                           error="not sent: the document was settled"))
            report.skipped += 1
            continue
        try:
            with ledger_uow(engine, clock=clock, policy=settings.credit) as uow:
                done = render_document(uow, renderer, row.doc_type, row.doc_id, "pdf",
                                       tax_inclusive=settings.billing.tax_inclusive)
                uow.commit()
            number = str(done.doc.get("number") or row.doc_id)
            recipients = [a for _, a in getaddresses([row.recipient]) if a]
            if not recipients:
                raise LedgerError("billing_email", row.recipient, "holds no address")
            now = clock() if clock else datetime.now(UTC)
            msg = build_message(
                sender=email.from_address, recipients=", ".join(recipients),
                subject_line=subject(row.kind, row.doc_type, number, seller),
                message_id=row.message_id,
                body=_body(row.kind, LABELS.get(row.doc_type, row.doc_type), number,
                           row.account_name, seller, done.doc),
                pdf=done.body, filename=f"{number}.pdf", now=now)
        except Exception as exc:  # noqa: BLE001 - a template error, a bad document: this one only
            _finish(engine, clock, partial(
                outbox.mark_dead, row_id=row.id, state="failed",
                error=f"cannot render: {type(exc).__name__}: {exc}"))
            report.failed += 1
            report.errors.append({"id": row.id, "state": "failed", "error": str(exc)})
            continue
        try:
            refused = client.send(msg, recipients)
        except MailConfigError as exc:
            report.config_error = str(exc)
            _release(engine, clock, [r.id for r in claimed[i:]], str(exc), 0.0)
            return
        except Unreachable as exc:
            report.unreachable = str(exc)
            _release(engine, clock, [r.id for r in claimed[i:]], str(exc),
                     _delay(email, 0))
            return
        except smtplib.SMTPException as exc:
            permanent, reason = _permanent(exc)
            if permanent:
                _finish(engine, clock, partial(outbox.mark_dead, row_id=row.id, error=reason))
                report.dead += 1
                report.errors.append({"id": row.id, "state": "dead", "error": reason})
            else:
                state = _finish(engine, clock, partial(
                    outbox.mark_retry, row_id=row.id, error=reason,
                    delay_seconds=_delay(email, row.attempts), max_attempts=email.max_attempts))
                if state == "dead":
                    report.dead += 1
                    report.errors.append({"id": row.id, "state": "dead", "error": reason})
                else:
                    report.retried += 1
            continue
        if after_accept is not None:
            after_accept(row.id)
        _finish(engine, clock, partial(outbox.mark_sent, row_id=row.id))
        if refused:
            log.warning("email %s: sent, some recipients refused: %s", row.id, refused)
        report.sent += 1


def _finish(engine: Engine, clock: Callable[[], datetime] | None,
            fn: Callable[[Any], Any]) -> Any:
    with ledger_uow(engine, clock=clock, actor=_ACTOR.get()) as uow:
        result = fn(uow)
        uow.commit()
    return result


def _release(engine: Engine, clock: Callable[[], datetime] | None, ids: list[int], error: str,
             delay: float) -> None:
    _finish(engine, clock, lambda uow: outbox.release(uow, ids, error, delay_seconds=delay))
