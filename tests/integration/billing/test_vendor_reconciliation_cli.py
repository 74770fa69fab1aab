"""``ledgerbridge reconcile`` over a SQLite file (the service is tested on both databases in
test_vendor_reconciliation.py): formats, --output, exit codes, mappings."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from click.testing import CliRunner

from jobs.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "partner_center_recon_2026_03.csv"


def _cli(url: str, *args: str):
    return CliRunner().invoke(main, ["--database-url", url, *args], catch_exceptions=False)


def test_reconcile_commands(sqlite_engine, tmp_path) -> None:
    url = str(sqlite_engine.url)
    for args in (["accounts", "add", "--name", "Alpha", "--currency", "USD", "--ext-id",
                  "001ALPHA", "--tax-exempt"],
                 ["products", "add", "--sku", "CFQ7TTC0LH18:0001", "--name", "Basic"]):
        assert _cli(url, *args).exit_code == 0
    res = _cli(url, "reconcile", "map", "customer", "aaaa0a0a-1111-4a4a-8a8a-aaaaaaaaaaaa",
               "001ALPHA", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["account_id"] == 1
    res = _cli(url, "reconcile", "vendor", str(SAMPLE), "--period", "2026-03", "--format", "json")
    assert res.exit_code == 1          # rows refused and lines not matched: finance looks
    report = json.loads(res.stdout)
    assert (report["rows_read"], report["rows_refused"], report["unchanged"]) == (8, 1, False)
    # Alpha's Basic: we billed nothing in March; Premium is not in our catalog
    assert [(u["row"], u["reason"]) for u in report["unmatched"]][:2] == [
        (2, "not_billed"), (3, "no_product")]
    assert "row 8: Subtotal='12,5x': is not a number" in res.stderr
    out = tmp_path / "report.csv"
    res = _cli(url, "reconcile", "vendor", str(SAMPLE), "--period", "2026-03", "--output",
               str(out))
    assert res.exit_code == 1 and "file already imported" in res.stdout
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert (rows[0]["status"], rows[0]["reasons"], rows[0]["cost"]) == (
        "unmatched", "not_billed", "100.00")
    res = _cli(url, "reconcile", "show", "--period", "2026-03", "--format", "csv")
    assert res.exit_code == 0 and res.stdout == out.read_text()
    res = _cli(url, "reconcile", "show", "--period", "2026-03")
    assert res.exit_code == 0 and "unmatched vendor lines 7" in res.stdout
    res = _cli(url, "reconcile", "mappings", "--json")
    assert [m["vendor_key"] for m in json.loads(res.output)] == [
        "aaaa0a0a-1111-4a4a-8a8a-aaaaaaaaaaaa"]
    assert _cli(url, "reconcile", "unmap", "customer",
                "aaaa0a0a-1111-4a4a-8a8a-aaaaaaaaaaaa").exit_code == 0
    assert "(none)" in _cli(url, "reconcile", "mappings").output
