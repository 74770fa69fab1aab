"""``ledgerbridge products show | update``: a product and finance's term settings.

Attached to the ``products`` group of :mod:`jobs.cli.billing` (``add``, ``list``). Thin over
:func:`billing_core.service.pricing.get_product` and
:func:`billing_core.service.pricing.set_product_terms`, the functions the API's
``GET /billing/products/{ref}`` and ``POST /billing/products/{ref}:update`` call. A
product is named by ledger id or sku. Exit codes (``jobs.cli.exits``): 0 done; 2 bad input,
one line on stderr naming the field and the value, nothing written (an unknown product, a
term length out of range, a policy that does not exist, a term on a one-time product).
"""
from __future__ import annotations

from typing import Any

import click

from jobs.cli.billing import products
from jobs.cli.common import AppContext, emit, json_option, pass_app

_SHOWN = ("id", "sku", "name", "kind", "billing_period", "pricing_model", "needs_provisioning",
          "active", "term_months", "auto_renew", "term_decrease", "early_termination")


def _view(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in _SHOWN}


@products.command("show")
@click.argument("product")
@json_option
@pass_app
def products_show(app: AppContext, product: str, as_json: bool) -> None:
    """Show a product (ledger id or sku) with its term settings."""
    from billing_core.service.pricing import get_product

    emit(_view(app.read(lambda u: get_product(u.conn, product))), as_json=as_json,
         title="Product")


@products.command("update")
@click.argument("product")
@click.option("--term-months", type=int, help="Default term of new subscriptions, in months "
              "(0: no term; whole years for a product billed yearly).")
@click.option("--auto-renew/--no-auto-renew", default=None,
              help="Whether new subscriptions renew at their term end.")
@click.option("--term-decrease", help="A decrease inside a committed term: refuse | "
              "at_term_end.")
@click.option("--early-termination", help="An end inside a committed term: refuse | "
              "at_term_end | allowed.")
@json_option
@pass_app
def products_update(app: AppContext, product: str, term_months: int | None,
                    auto_renew: bool | None, term_decrease: str | None,
                    early_termination: str | None, as_json: bool) -> None:
    """Set a product's term settings (only those given change). The defaults apply to
    subscriptions ordered from then on, the policies to changes decided from then on; a CRM
    update of the product keeps them."""
    from billing_core.service.pricing import set_product_terms

    if (term_months, auto_renew, term_decrease, early_termination) == (None,) * 4:
        raise click.UsageError("give at least one of --term-months, --auto-renew/"
                               "--no-auto-renew, --term-decrease, --early-termination")
    row = app.write(lambda u: set_product_terms(
        u, product, term_months=term_months, auto_renew=auto_renew,
        term_decrease=term_decrease, early_termination=early_termination))
    emit(_view(row), as_json=as_json, title="Product")
