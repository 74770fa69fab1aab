"""Render the billing demo's invoice as HTML and take a picture of it in headless Chromium:
``docs/invoice.png`` (the README's picture). Run by hand, not in CI:

    .venv/bin/python docs/scripts/invoice_png.py            # needs chromium (apt-get install chromium)
    .venv/bin/python docs/scripts/invoice_png.py --out /tmp/invoice.png --number INV-000001

The ledger is the billing demo's, billed on 10 March 2026 in a temporary SQLite database;
the invoice is rendered with the built-in templates and a sample seller, so the picture shows
what a customer of a default installation receives. Exits 1 when no Chromium is found.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from billing_core.adapters.db import make_engine  # noqa: E402
from billing_core.documents.render import Renderer, RenderOptions, Seller  # noqa: E402
from billing_core.service import ledger_uow  # noqa: E402
from billing_core.service.bill_run import run_bill_run  # noqa: E402
from billing_core.service.rendering import load  # noqa: E402
from jobs.cli.demo import seed_demo_ledger  # noqa: E402
from jobs.migrate import upgrade  # noqa: E402

BILL_DATE = date(2026, 3, 10)
SELLER = Seller("Northwind Billing Ltd", ("1 Main Street", "Dublin D02 XY45", "Ireland"),
                "IE1234567T", "billing@northwind.example")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def invoice_html(number: str, folder: Path) -> str:
    engine = make_engine(f"sqlite:///{folder / 'ledger.db'}")
    upgrade(engine)
    with ledger_uow(engine) as uow:
        seed_demo_ledger(uow, BILL_DATE)
        uow.commit()
    run_bill_run(engine, BILL_DATE, uow_factory=lambda: ledger_uow(engine))
    with ledger_uow(engine, read_only=True) as uow:
        doc = load(uow.conn, "invoice", number)
    engine.dispose()
    return Renderer(RenderOptions(seller=SELLER)).html(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "invoice.png"))
    parser.add_argument("--number", default="INV-000002",
                        help="the demo invoice (INV-000002: prorations, usage, a prepaid "
                             "credit drawn, 19 %% tax)")
    parser.add_argument("--width", type=int, default=900)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args()
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        print("no Chromium found (apt-get install -y chromium): nothing written", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="lb-invoice-png-") as tmp:
        page = Path(tmp) / "invoice.html"
        page.write_text(invoice_html(args.number, Path(tmp)), encoding="utf-8")
        out = Path(args.out).absolute()
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--force-device-scale-factor=1",
                        f"--user-data-dir={tmp}/profile", f"--screenshot={out}",
                        f"--window-size={args.width},{args.height}", page.as_uri()],
                       check=True, timeout=120, capture_output=True)
    print(f"{args.number}: {out} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
