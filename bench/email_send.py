"""Email benchmark: a bill run of N invoices emailed to a loopback SMTP server, with a kill -9.

    .venv/bin/python bench/email_send.py                    # 1,000 invoices, fresh SQLite
    .venv/bin/python bench/email_send.py --invoices 200 --no-kill
    .venv/bin/python bench/email_send.py --database-url postgresql://postgres@127.0.0.1:5432/test

N accounts (2 seats at 10.00 USD, no tax) are billed on 1 March 2027 (one invoice each). A
child process (``jobs.mailer.send_pending``) sends them to an aiosmtpd server in this process;
once half of them have arrived the child is killed with SIGKILL, then a second child sends
the rest. Prints the messages received, the distinct Message-IDs (must equal N: every invoice
sent), the resends (the same Message-ID twice: at most one per kill, the message accepted
between the server's answer and the mark) and messages per second. Exits 1 if an invoice was
not sent. On PostgreSQL the benchmark works in its own schema and drops it.
"""
from __future__ import annotations

import argparse
import email
import email.policy
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "email"))

from email_helpers import Inbox, billed_ledger, start_server  # noqa: E402
from sqlalchemy import text  # noqa: E402

from billing_core.adapters.db import make_engine  # noqa: E402
from jobs.migrate import upgrade  # noqa: E402

CHILD = """
import sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {helpers!r})
from billing_core.adapters.db import make_engine
from email_helpers import settings_for
from jobs.mailer import send_pending
engine = make_engine({url!r})
report = send_pending(engine, settings_for({port}, batch_size=50))
print(report.sent, report.failed, report.dead, report.unreachable)
"""


def _child(url: str, port: int) -> subprocess.Popen[str]:
    code = CHILD.format(root=str(ROOT), helpers=str(ROOT / "tests" / "integration" / "email"),
                        url=url, port=port)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=1000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--no-kill", action="store_true", help="one child, never killed")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="lb-email-bench-")
    schema = None
    if args.database_url:
        schema = f"bench_email_{os.getpid()}"
        admin = make_engine(args.database_url)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{args.database_url}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tmp}/ledger.db"
    engine = make_engine(url)
    try:
        upgrade(engine)
        t0 = time.perf_counter()
        billed_ledger(engine, args.invoices)
        print(f"ledger: {args.invoices} invoices billed in {time.perf_counter() - t0:.1f} s")
        inbox = Inbox()
        server = start_server(inbox)
        try:
            start = time.perf_counter()
            child = _child(url, int(server.port))
            killed_at = None
            if not args.no_kill:
                while child.poll() is None and len(inbox.messages) < args.invoices // 2:
                    time.sleep(0.01)
                if child.poll() is None:
                    os.kill(child.pid, signal.SIGKILL)
                    child.wait()
                    killed_at = len(inbox.messages)
                    print(f"kill -9 after {killed_at} messages received")
                    child = _child(url, int(server.port))
            out, _ = child.communicate()
            elapsed = time.perf_counter() - start
            print(f"last child: sent failed dead unreachable = {out.strip()}")
        finally:
            server.stop()
        ids = Counter(email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"]
                      for _, _, raw in inbox.messages)
        resent = sum(n - 1 for n in ids.values())
        print(f"messages received: {len(inbox.messages)}; distinct Message-IDs: {len(ids)} "
              f"(invoices: {args.invoices}); resent: {resent}")
        print(f"time: {elapsed:.1f} s, {len(inbox.messages) / elapsed:.1f} messages/s "
              f"(render + SMTP + 3 transactions each; {os.cpu_count()} cores)")
        return 0 if len(ids) == args.invoices else 1
    finally:
        engine.dispose()
        if schema is not None:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
