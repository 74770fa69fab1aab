"""Products over HTTP: the catalog and finance's term settings of a product.

A thin layer over :func:`billing_core.service.pricing.get_product`, ``list_products`` and
``set_product_terms``, the functions the CLI's ``products list`` / ``products show`` /
``products update`` call. Reads need ``billing:read``, the update ``billing:write`` and runs in
the request's unit of work (replayed, not repeated, under the same ``Idempotency-Key``). Only
the settings given change. A bad value (a term length out of range, an unknown policy, a term
on a one-time product) is a 422 naming the field and the value, nothing written; an unknown
product a 404. A product is named by ledger id or sku
(letters, digits, ``_ . -``; another sku by its id).
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from billing_core.service.pricing import get_product, list_products, set_product_terms
from jobs.api.deps import Reader, Uow, Writer, router
from jobs.api.models import NAME_PATTERN, NO_NUL, Bool, Int, Model

routes = router("products")

ProductRef = Annotated[str, Path(min_length=1, max_length=255, pattern=NAME_PATTERN,
                                 description="Ledger id, or a sku of letters, digits, _ . -")]


class ProductOut(BaseModel):
    id: int
    sku: str
    name: str
    kind: str = Field(examples=["recurring"])
    billing_period: str | None = Field(None, examples=["month"])
    pricing_model: str = Field(examples=["per_unit"])
    needs_provisioning: bool
    active: bool
    term_months: int | None = Field(None, examples=[12], description="null: no term.")
    auto_renew: bool
    term_decrease: str = Field(examples=["at_term_end"])
    early_termination: str = Field(examples=["at_term_end"])


class ProductList(BaseModel):
    items: list[ProductOut]


class UpdateProductTerms(Model):
    """Only the settings given change."""
    term_months: Int | None = Field(None, description=(
        "Default term of new subscriptions in months; 0 removes it."))
    auto_renew: Bool | None = None
    term_decrease: str | None = Field(None, max_length=32, pattern=NO_NUL, examples=["refuse"],
                                      description="refuse | at_term_end")
    early_termination: str | None = Field(None, max_length=32, pattern=NO_NUL,
                                          examples=["allowed"],
                                          description="refuse | at_term_end | allowed")
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"term_months": 12, "auto_renew": True, "term_decrease": "at_term_end",
         "early_termination": "refuse"}]})


def _out(row: Any) -> ProductOut:
    return ProductOut(**{k: row[k] for k in ProductOut.model_fields})


@routes.get("/billing/products")
def get_products(uow: Uow, _: Reader) -> ProductList:
    """Every product, in id order, with its term settings."""
    return ProductList(items=[_out(r) for r in list_products(uow.conn)])


@routes.get("/billing/products/{ref}")
def show_product(ref: ProductRef, uow: Uow, _: Reader) -> ProductOut:
    """One product (ledger id or sku) with its term settings."""
    return _out(get_product(uow.conn, ref))


@routes.post("/billing/products/{ref}:update")
def update_product_terms(ref: ProductRef, body: UpdateProductTerms, uow: Uow,
                         _: Writer) -> ProductOut:
    """Set a product's term settings: the defaults new subscriptions take (term length,
    auto-renew) and the policies for a decrease or an end inside a committed term."""
    return _out(set_product_terms(uow, ref, term_months=body.term_months,
                                  auto_renew=body.auto_renew, term_decrease=body.term_decrease,
                                  early_termination=body.early_termination))
