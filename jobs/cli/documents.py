"""``ledgerbridge invoices|credit-memos|debit-memos render`` and ``statements render``: customer
documents as PDF or HTML (docs/DOCUMENTS.md).

Exit codes (``jobs.cli.exits``): 0 written; 2 bad input or configuration, one line on stderr
and nothing written: an unknown number or account (``not_found`` naming it), a template with
an error (``template_error`` naming the file and line), a bad ``[documents]`` setting, ``--to``
before ``--from``, a PDF asked for on a terminal without ``-o``, an output file that cannot be
written; 3 the database unreachable.

The ``render`` commands join the ``invoices``, ``credit-memos`` and ``debit-memos`` groups of
``jobs.cli.billing`` and ``jobs.cli.receivables`` when this module is imported (by
``jobs.cli.commands``); a second command of the same name is refused, as ``register`` does.
"""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from billing_core.domain.errors import ValidationError
from jobs.cli.billing import invoices
from jobs.cli.common import AppContext, pass_app
from jobs.cli.receivables import credit_memos, debit_memos

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from billing_core.documents.render import Renderer
    from config.settings import Settings

_FORMAT = click.option("--format", "fmt", type=click.Choice(["pdf", "html"]), default="pdf",
                       show_default=True, help="PDF, or HTML (the same template).")
_OUTPUT = click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
                       help="Write to this file ('-' or none: standard output; a PDF is not "
                            "written to a terminal).")


def _renderer(app: AppContext) -> Renderer:
    from billing_core.documents.render import Renderer

    return Renderer(app.settings.documents.render_options())


def _check_output(output: str | None, fmt: str) -> None:
    if (output in (None, "-")) and fmt == "pdf" and sys.stdout.isatty():
        raise ValidationError("--output", output, "a PDF is not written to a terminal: give "
                              "-o FILE (or redirect the output)")


def _write(output: str | None, body: bytes, what: str, note: str = "") -> None:
    """The bytes to the file or standard output; a line saying what was written to a file."""
    if output in (None, "-"):
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return
    path = Path(str(output))
    try:
        path.write_bytes(body)
    except OSError as exc:
        raise ValidationError("--output", str(path), f"cannot be written: "
                              f"{exc.strerror or exc}") from None
    click.echo(f"{what}: {len(body):,} bytes written to {path}{note}")


def _render_command(kind: str, label: str) -> click.Command:
    @click.command("render")
    @click.argument("ref", metavar="NUMBER")
    @_FORMAT
    @_OUTPUT
    @click.option("--fresh", is_flag=True, help="Render the ledger as it is now with the current "
                  "templates, and keep nothing (a preview), instead of the file kept when the "
                  "document was first rendered after posting.")
    @pass_app
    def render(app: AppContext, ref: str, fmt: str, output: str | None, fresh: bool) -> None:
        from billing_core.service.rendering import render_document

        _check_output(output, fmt)
        renderer = _renderer(app)
        with app.uow() as uow:
            done = render_document(uow, renderer, kind, ref, fmt, fresh=fresh,
                                   tax_inclusive=app.settings.billing.tax_inclusive)
            number = done.doc["number"] or f"draft {done.doc['id']}"
            note = " (as first issued)" if done.kept else ""
            _write(output, done.body, f"{label} {number} ({fmt})", note)
            uow.commit()

    render.help = (f"Render {label.lower()} NUMBER (number or id) as PDF or HTML. A posted "
                   f"document is kept as first rendered and shown the same afterwards.")
    return render


invoice_render = _render_command("invoice", "Invoice")
credit_memo_render = _render_command("credit_memo", "Credit memo")
debit_memo_render = _render_command("debit_memo", "Debit memo")


@click.group("statements")
def statements() -> None:
    """Account statements."""


@statements.command("render")
@click.argument("account")
@click.option("--from", "date_from", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="First day (YYYY-MM-DD).")
@click.option("--to", "date_to", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Last day, included (YYYY-MM-DD).")
@_FORMAT
@_OUTPUT
@pass_app
def statements_render(app: AppContext, account: str, date_from: datetime, date_to: datetime,
                      fmt: str, output: str | None) -> None:
    """Render ACCOUNT's statement (ledger id or CRM id): opening balance, documents and
    payments from --from to --to, closing balance."""
    from billing_core.service.rendering import render_statement

    _check_output(output, fmt)
    renderer = _renderer(app)
    done = app.read(lambda uow: render_statement(uow.conn, renderer, account, date_from.date(),
                                                 date_to.date(), fmt))
    _write(output, done.body, f"Statement of {done.doc['buyer']['name']} ({fmt})")


def write_latest_invoice(engine: Engine, settings: Settings, account_id: int,
                         folder: Path) -> Path | None:
    """The account's latest posted invoice as ``folder/NUMBER.pdf``, issued (its file kept)
    as ``invoices render`` does; None when it has none. The demos end with it."""
    from dataclasses import replace

    from billing_core.documents.options import Seller
    from billing_core.documents.render import Renderer
    from billing_core.service import ledger_uow
    from billing_core.service.invoices import list_invoices
    from billing_core.service.rendering import render_document

    options = settings.documents.render_options()
    if not options.seller.name:
        options = replace(options, seller=Seller("ledgerbridge demo seller",
                                                 ("1 Example Street", "Dublin"), "IE0000000X"))
    with ledger_uow(engine, policy=settings.credit) as uow:
        numbered = [r for r in list_invoices(uow.conn, account_id=account_id) if r["number"]]
        if not numbered:
            return None
        done = render_document(uow, Renderer(options), "invoice", numbered[-1]["number"], "pdf",
                               tax_inclusive=settings.billing.tax_inclusive)
        path = folder / f"{numbered[-1]['number']}.pdf"
        path.write_bytes(done.body)
        uow.commit()
    return path


def _attach(group: click.Group, command: click.Command) -> None:
    name = str(command.name)
    if name in group.commands:
        raise RuntimeError(f"the command {group.name} {name!r} is registered twice")
    group.add_command(command, name)


for _group, _command in ((invoices, invoice_render), (credit_memos, credit_memo_render),
                         (debit_memos, debit_memo_render)):
    _attach(_group, _command)

COMMANDS: list[click.Command] = [statements]
