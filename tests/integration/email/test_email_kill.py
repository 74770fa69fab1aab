"""A sender killed with SIGKILL (issue 16, item 3), on SQLite and PostgreSQL: a child process
sends a bill run's 10 invoices to a loopback SMTP server and kills itself at the worst moment,
right after the server accepted its 3rd message and before marking it sent. A second run
(this process) takes over the dead process's claims: every invoice arrives, and the one
message caught in that window arrives twice with the same Message-ID (11 messages, 10 IDs)."""
from __future__ import annotations

import email
import email.policy
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from email_helpers import Inbox, billed_ledger, settings_for
from sqlalchemy import Engine, text

from billing_core.service import ledger_uow
from billing_core.service.email_outbox import list_emails
from jobs.mailer import send_pending

ROOT = Path(__file__).resolve().parents[3]
CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {helpers!r})
from billing_core.adapters.db import make_engine
from email_helpers import settings_for
from jobs.mailer import send_pending
accepted = []
def die_on_third(row_id):
    accepted.append(row_id)
    if len(accepted) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
send_pending(make_engine({url!r}), settings_for({port}, batch_size=4), after_accept=die_on_third)
"""


def _child_url(engine: Engine) -> str:
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        url += f"{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    return url


def test_a_kill_9_then_a_restart_sends_every_invoice(engine: Engine,
                                                     smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    billed_ledger(engine, 10)
    code = CHILD.format(root=str(ROOT), helpers=str(Path(__file__).parent),
                        url=_child_url(engine), port=port)
    child = subprocess.run([sys.executable, "-c", code], timeout=120, check=False)
    assert child.returncode == -signal.SIGKILL
    assert len(inbox.messages) == 3
    report = send_pending(engine, settings_for(port))
    assert report.sent == 8            # the 3rd again (unmarked) and the 7 never sent
    ids = Counter(email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"]
                  for _, _, raw in inbox.messages)
    assert len(inbox.messages) == 11 and len(ids) == 10
    assert [n for n in ids.values() if n > 1] == [2]
    with ledger_uow(engine, read_only=True) as uow:
        assert Counter(r["state"] for r in list_emails(uow.conn)) == {"sent": 10}
