"""``invoices|credit-memos|debit-memos render`` and ``statements render`` through click's
CliRunner on a SQLite file ledger: what they write and their exit codes (jobs/cli/exits.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from documents_helpers import BILL_DATE, at, text_of

from billing_core.adapters.db import make_engine
from billing_core.service import ledger_uow
from billing_core.service.bill_run import run_bill_run
from billing_core.service.memos import (
    activate_credit_memo,
    activate_debit_memo,
    create_credit_memo,
    create_debit_memo,
)
from jobs.cli import main
from jobs.cli.demo import seed_demo_ledger


@pytest.fixture
def cli(tmp_path: Path, sqlite_template: Path):
    shutil.copy(sqlite_template, tmp_path / "cli.db")
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = make_engine(url)
    with ledger_uow(engine, clock=lambda: at(BILL_DATE)) as uow:
        ids = seed_demo_ledger(uow, BILL_DATE)
        uow.commit()
    run_bill_run(engine, BILL_DATE, uow_factory=lambda: ledger_uow(engine))
    with ledger_uow(engine, clock=lambda: at(BILL_DATE)) as uow:
        acme = ids["Acme Corp"]
        activate_credit_memo(uow, create_credit_memo(uow, acme, "10.00", "Goodwill"))
        activate_debit_memo(uow, create_debit_memo(uow, acme, "7.50", "Card fee"))
        uow.commit()
    engine.dispose()
    runner = CliRunner()

    def run(*args: str, code: int = 0, config: Path | None = None):
        pre = ["--database-url", url] + (["--config", str(config)] if config else [])
        result = runner.invoke(main, [*pre, *args])
        assert result.exit_code == code, (result.output, result.stderr)
        return result
    return run


def test_render_each_document_to_a_file(cli, tmp_path: Path) -> None:
    out = tmp_path / "inv.pdf"
    said = cli("invoices", "render", "INV-000001", "-o", str(out)).stdout
    assert said.startswith("Invoice INV-000001 (pdf): ") and "(as first issued)" in said
    first = out.read_bytes()
    assert "INV-000001" in text_of(first) and "Acme Corp" in text_of(first)
    cli("invoices", "render", "1", "-o", str(out))                     # by id: the kept file
    assert out.read_bytes() == first
    cli("credit-memos", "render", "CM-000001", "-o", str(tmp_path / "cm.pdf"))
    assert "Goodwill" in text_of((tmp_path / "cm.pdf").read_bytes())
    cli("debit-memos", "render", "DM-000001", "--format", "html", "-o", str(tmp_path / "dm.html"))
    assert "Card fee" in (tmp_path / "dm.html").read_text(encoding="utf-8")
    cli("statements", "render", "1", "--from", "2026-03-01", "--to", "2026-03-31",
        "-o", str(tmp_path / "st.pdf"))
    assert "Closing balance" in text_of((tmp_path / "st.pdf").read_bytes())


def test_html_goes_to_standard_output(cli) -> None:
    html = cli("invoices", "render", "INV-000002", "--format", "html").stdout
    assert html.startswith("<!DOCTYPE html>") and "INV-000002" in html and "Globex" in html
    assert "Opening balance" in cli("statements", "render", "1", "--from", "2026-03-01",
                                    "--to", "2026-03-31", "--format", "html").stdout


def test_bad_input_exits_2_with_one_line_naming_it(cli, tmp_path: Path) -> None:
    unknown = cli("invoices", "render", "INV-424242", "-o", str(tmp_path / "x.pdf"), code=2)
    assert unknown.stderr.strip() == "error: not_found: invoice='INV-424242': does not exist"
    assert not (tmp_path / "x.pdf").exists()
    assert "credit_memo='CM-000099'" in cli("credit-memos", "render", "CM-000099", code=2).stderr
    assert "account='NOPE'" in cli("statements", "render", "NOPE", "--from", "2026-03-01",
                                   "--to", "2026-03-31", code=2).stderr
    assert "--to" in cli("statements", "render", "1", "--from", "2026-03-31", "--to",
                         "2026-03-01", code=2).stderr
    assert "cannot be written" in cli("invoices", "render", "1", "-o",
                                      str(tmp_path / "no" / "dir.pdf"), code=2).stderr
    assert "--format" in cli("invoices", "render", "1", "--format", "docx", code=2).stderr


def test_a_broken_template_exits_2_naming_the_template_and_line(cli, tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "invoice.html").write_text('{% extends "base.html" %}\n{% block body %}\n'
                                         "{{ doc.lines[0].colour }}\n{% endblock %}\n",
                                         encoding="utf-8")
    config = tmp_path / "lb.toml"
    config.write_text(f'[documents]\ntemplates_dir = "{folder}"\nseller_name = "Northwind"\n',
                      encoding="utf-8")
    out = tmp_path / "inv.pdf"
    broken = cli("invoices", "render", "INV-000003", "-o", str(out), code=2, config=config)
    assert broken.stderr.startswith(f"error: template_error: template='{folder}/invoice.html:3'")
    assert "colour" in broken.stderr and len(broken.stderr.strip().splitlines()) == 1
    assert not out.exists()
    # nothing else stops: a memo renders with the built-in template it did not replace
    cli("credit-memos", "render", "CM-000001", "-o", str(tmp_path / "cm.pdf"), config=config)
    assert "Northwind" in text_of((tmp_path / "cm.pdf").read_bytes())


def test_a_bad_font_setting_exits_2_and_vera_draws_latin_extended(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[documents]\nfont = "/no/such/font.ttf"\n', encoding="utf-8")
    refused = cli("invoices", "render", "INV-000001", "-o", str(tmp_path / "x.pdf"), code=2,
                  config=bad)
    assert refused.stderr.startswith("error: invalid_input: documents.font='/no/such/font.ttf'")
    assert not (tmp_path / "x.pdf").exists()
    vera = tmp_path / "vera.toml"
    vera.write_text('[documents]\nfont = "vera"\nseller_name = "Łukasz Bąk Sp. z o.o."\n'
                    'locale = "pl_PL"\n', encoding="utf-8")
    cli("invoices", "render", "INV-000001", "--fresh", "-o", str(tmp_path / "v.pdf"), config=vera)
    text = text_of((tmp_path / "v.pdf").read_bytes())
    assert "Łukasz Bąk"[:6] in text and "2321,27USD" in text.replace(" ", "")
