"""A product's term settings over HTTP, on SQLite and PostgreSQL: ``GET /billing/products``,
``GET /billing/products/{ref}``, ``POST /billing/products/{ref}:update`` (the service
the CLI's ``products update`` calls). A bad value is a 422 naming the field and the value
with nothing written; an unknown product a 404; a repeated Idempotency-Key is replayed."""
from __future__ import annotations

from billing_core.service.pricing import ProductIn, add_product

TERMS = ("term_months", "auto_renew", "term_decrease", "early_termination")


def _seat(api) -> int:
    return int(api.run(lambda uow: add_product(uow, ProductIn(sku="SEAT", name="Seat"))))


def test_read_and_update_a_products_terms(api) -> None:
    pid = _seat(api)
    r = api.get(f"/billing/products/{pid}")
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in TERMS} == {"term_months": None, "auto_renew": False,
                                               "term_decrease": "at_term_end",
                                               "early_termination": "at_term_end"}
    body = {"term_months": 12, "auto_renew": True, "term_decrease": "refuse"}
    r = api.post("/billing/products/SEAT:update", body, key="terms-1")
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in TERMS} == {"term_months": 12, "auto_renew": True,
                                               "term_decrease": "refuse",
                                               "early_termination": "at_term_end"}
    again = api.post("/billing/products/SEAT:update", body, key="terms-1")
    assert again.status_code == 200 and again.json() == r.json()
    listed = api.get("/billing/products").json()["items"]
    assert [(p["sku"], p["term_months"]) for p in listed] == [("SEAT", 12)]
    r = api.post("/billing/products/SEAT:update", {"term_months": 0})
    assert r.status_code == 200 and r.json()["term_months"] is None
    assert api.post("/billing/products/SEAT:update", {"term_months": 12},
                    scope="billing:read").status_code == 403


def test_bad_values_are_422_naming_field_and_value_and_write_nothing(api) -> None:
    _seat(api)
    before = api.get("/billing/products/SEAT").json()
    for body, field, value in (
            ({"term_months": 121, "term_decrease": "refuse"}, "term_months", 121),
            ({"term_decrease": "later"}, "term_decrease", "later"),
            ({"early_termination": "never", "auto_renew": True}, "early_termination",
             "never")):
        r = api.post("/billing/products/SEAT:update", body)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert (error["field"], error["value"]) == (field, value), error
    r = api.post("/billing/products/SEAT:update", {"term_months": "twelve"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.term_months"
    r = api.post("/billing/products/SEAT:update", {"colour": "red"})
    assert r.status_code == 422
    assert api.get("/billing/products/SEAT").json() == before
    assert api.get("/billing/products/NOPE").status_code == 404
    assert api.post("/billing/products/NOPE:update", {"term_months": 12}).status_code == 404
