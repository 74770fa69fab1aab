"""Every operation refuses malformed input with a 422 whose JSON error names the field, and
writes nothing; an unknown id is 404. (Per-endpoint cases live beside each endpoint's tests.)"""
from __future__ import annotations

import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select

from billing_core.adapters.tables import metadata as ledger
from jobs.api.tables import api_idempotency


def _operations(api):
    paths = api.get("/openapi.json").json()["paths"]
    for path, ops in sorted(paths.items()):
        for method, op in ops.items():
            yield method.upper(), path, op


def _rows(api) -> int:
    def count(conn):
        return sum(conn.execute(select(func.count()).select_from(t)).scalar_one()
                   for t in (*ledger.sorted_tables, api_idempotency))
    return int(api.read(count))


def test_every_body_refuses_the_wrong_shape(api, account):
    before = _rows(api)
    checked = 0
    for method, path, op in _operations(api):
        if "requestBody" not in op:
            continue
        concrete = path.replace("{account}", str(account)).replace("{request_id}", "1") \
            .replace("{subscription_id}", "1").replace("{ref}", "1")
        for bad in ([], "text", {"unexpected": 1}):
            r = api.client.request(method, concrete, json=bad, headers=api.headers("admin"))
            assert r.status_code == 422, (path, bad, r.status_code, r.text)
            error = r.json()["error"]
            assert error["field"] and error["field"].startswith("body"), (path, error)
            assert error["message"], path
        checked += 1
    assert checked >= 16
    assert _rows(api) == before          # nothing written, not even an idempotency claim


def test_every_path_and_query_parameter_is_checked(api):
    for method, path, op in _operations(api):
        if method != "GET":
            continue
        if "{" in path:
            bad = path.replace("{account}", "bad%20id!").replace("{ref}", "bad%20ref!").replace(
                "{run_id}", "0").replace("{order_id}", "0").replace("{subscription_id}", "0")
            r = api.client.get(bad, headers=api.headers("admin"))
            assert r.status_code == 422, (path, r.status_code, r.text)
            assert r.json()["error"]["field"].startswith("path."), path
            missing = path.replace("{account}", "404").replace("{ref}", "404").replace(
                "{run_id}", "404").replace("{order_id}", "404").replace("{subscription_id}", "404")
            assert api.client.get(missing, headers=api.headers("admin")).status_code == 404, path
        limits = [p for p in op.get("parameters", []) if p["name"] == "limit"]
        if limits:
            r = api.client.get(path, params={"limit": 0}, headers=api.headers("admin"))
            assert r.status_code == 422 and r.json()["error"]["field"] == "query.limit", path


def test_ids_too_large_for_a_64_bit_column_are_422_not_500(api, account):
    """Found by hand after fuzzing: a 25-digit id reached SQLite as an int it cannot bind."""
    big = "9" * 25
    for path in (f"/billing/credit-memos/{big}", f"/billing/debit-memos/{big}",
                 f"/billing/invoices/{big}", f"/billing/payments/{big}",
                 f"/accounts/{big}/hold"):
        r = api.get(path, scope="admin")
        assert r.status_code == 422, (path, r.status_code)
    for path, body in (
            ("/billing/credit-memos:cancel", {"credit_memos": [big]}),
            ("/billing/payments:apply", {"items": [{"payment": big}]}),
            ("/billing/credits:convert", {"credit_memo": big}),
            ("/billing/invoices:void", {"invoices": [big]}),
            ("/billing/credit-memos:apply", {"items": [{"credit_memo": "1", "applications": [
                {"target": f"invoice:{big}", "amount": "1.00"}]}]})):
        r = api.post(path, body, scope="admin")
        assert r.status_code == 422, (path, r.status_code)
    # 18 digits is still an id (that does not exist)
    assert api.get("/billing/credit-memos/" + "9" * 18).status_code == 404


def test_lone_surrogates_are_422_and_the_error_still_encodes(api, account):
    """Found by hand: JSON may escape a lone surrogate (\\ud800) that UTF-8 cannot carry; the
    error body that echoed it back failed to encode (a 500)."""
    for path, raw in (("/billing/credit-memos",
                       b'{"account_id": 1, "amount": "1.00", "reason": "a\\ud800b"}'),
                      (f"/accounts/{account}/hold:place", b'{"note": "\\udfff"}')):
        r = api.client.post(path, content=raw, headers={**api.headers("admin"),
                                                        "content-type": "application/json"})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["value"].startswith(("a\\ud800", "\\udfff"))


def test_unparseable_bodies_are_4xx_with_or_without_a_key(api):
    deep = b"[" * 50000 + b"]" * 50000
    for raw in (deep, b"\xff\xfe", b'{"account_id": 1e400, "amount": "1", "reason": "x"}'):
        for key in (None, f"k{len(raw)}"):
            headers = {**api.headers("admin"), "content-type": "application/json"}
            if key:
                headers["Idempotency-Key"] = key
            r = api.client.post("/billing/credit-memos", content=raw, headers=headers)
            assert r.status_code in (400, 422), (raw[:10], key, r.status_code)
            assert r.json()["error"]["code"] in ("bad_request", "invalid_json", "invalid_input")



@pytest.mark.parametrize("content_type", [None, "text/plain",
                                          "application/x-www-form-urlencoded"])
def test_a_json_body_sent_as_another_content_type_is_422_naming_the_content_type(
        api, account, content_type):
    """``curl -d`` without ``-H 'Content-Type: application/json'`` sends a form type: the
    body was then refused as ``body: Input should be a valid dictionary or object to extract
    fields from`` with the raw bytes' Python repr (``b'{...}'``) as the value, which says
    neither what is wrong nor where. The error names the Content-Type and what it must be."""
    raw = (f'{{"account_id": {account}, "amount": "25.00", "currency": "USD", '
           '"reason": "Goodwill"}').encode()
    before = _rows(api)
    headers = api.headers("billing:write")
    if content_type is not None:
        headers["Content-Type"] = content_type
    r = api.client.post("/billing/credit-memos", content=raw, headers=headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "Content-Type" and error["value"] == content_type
    assert "application/json" in error["message"]
    assert "b'" not in r.text
    assert _rows(api) == before

# --- JSON types: pydantic's lax mode read ``true`` as the integer 1 and ``"yes"`` as true -----

@pytest.mark.parametrize("path,body,field", [
    ("/billing/credit-memos", {"account_id": True, "amount": "1.00", "reason": "x"},
     "account_id"),
    ("/billing/debit-memos", {"account_id": True, "amount": "1.00", "reason": "x"},
     "account_id"),
    ("/billing/credits:grant", {"account_id": True, "amount": "1.00", "reason": "x"},
     "account_id"),
    ("/billing/payments", {"account_id": True, "amount": "1.00", "reference": "p-true"},
     "account_id"),
    ("/billing/payments", {"account_id": "1", "amount": "1.00", "reference": "p-str"},
     "account_id"),
    ("/billing/payments", {"account_id": 1.0, "amount": "1.00", "reference": "p-float"},
     "account_id"),
    ("/billing/credits:convert", {"grant_id": True}, "grant_id"),
    ("/billing/credit-memos", {"account_id": 1, "amount": "1.00", "reason": "x",
                               "activate": "yes"}, "activate"),
    ("/billing/payments", {"account_id": 1, "amount": "1.00", "reference": "p-1",
                           "auto_apply": 1}, "auto_apply"),
    ("/billing/accounts/{account}:update", {"payment_terms_days": True}, "payment_terms_days"),
    ("/billing/accounts/{account}:update", {"bill_cycle_day": "15"}, "bill_cycle_day"),
    ("/billing/accounts/{account}:update", {"tax_exempt": "no"}, "tax_exempt"),
    ("/billing/products/SEAT:update", {"term_months": True}, "term_months"),
    ("/billing/products/SEAT:update", {"auto_renew": "yes"}, "auto_renew"),
    ("/sync:run", {"connection": "salesforce", "full": "yes"}, "full"),
    ("/sync:run", {"connection": "salesforce", "full": 1}, "full"),
])
def test_a_boolean_is_not_an_integer_nor_a_string_a_boolean(api, account, path: str,
                                                             body: dict[str, Any],
                                                             field: str) -> None:
    """Found in review: ``{"account_id": true}`` wrote a credit memo on account 1 (201),
    ``{"payment_terms_days": true}`` set the terms to 1 day, ``"full": "yes"`` ran a full sync."""
    before = _rows(api)
    r = api.post(path.replace("{account}", str(account)), body, scope="admin")
    assert r.status_code == 422, (path, body, r.status_code, r.text)
    error = r.json()["error"]
    assert error["field"] == f"body.{field}", error
    assert error["value"] in (body[field], str(body[field])), error      # a float as text
    assert _rows(api) == before
    assert api.sync.started == []


def _request_models(api) -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp.__name__ not in found:
                found[tp.__name__] = tp
                for f in tp.model_fields.values():
                    visit(f.annotation)
        for arg in typing.get_args(tp):
            visit(arg)

    def walk(routes: list[Any]) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)     # include_router's wrapper
            if included is not None:
                walk(included.routes)
            body = getattr(route, "body_field", None)
            if body is not None:
                visit(body.field_info.annotation)

    walk(api.client.app.routes)
    return found


def _scalar_types(annotation: Any) -> set[type]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _scalar_types(args[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set().union(*(_scalar_types(a) for a in args))
    return {annotation} if annotation in (int, bool, str) else set()


def test_every_integer_and_flag_of_a_body_takes_only_its_json_type(api) -> None:
    """The class of the bug above, for every body model (present and future): an integer
    field refuses ``true``, ``1.5`` and ``"1"``; a boolean refuses ``1`` and ``"yes"``."""
    checked = 0
    for name, model in sorted(_request_models(api).items()):
        for field_name, info in model.model_fields.items():
            kinds = _scalar_types(info.annotation) & {int, bool}
            if not kinds:
                continue
            bad = [True, 1.5, "1"] if int in kinds else [1, "yes", "true"]
            for value in bad:
                try:
                    model.model_validate({field_name: value})
                    problems: list[Any] = []
                except ValidationError as exc:
                    problems = [e for e in exc.errors() if e["loc"][:1] == (field_name,)]
                assert problems, f"{name}.{field_name} took {value!r}"
            checked += 1
    assert checked >= 14


def test_every_string_of_a_body_refuses_nul(api) -> None:
    """models.py's rule for every body model: a NUL is stored by SQLite and refused by the
    PostgreSQL driver (a 500), so the schema refuses it (422) before either sees it."""
    checked = 0
    for name, model in sorted(_request_models(api).items()):
        for field_name, info in model.model_fields.items():
            if str not in _scalar_types(info.annotation):
                continue
            try:
                model.model_validate({field_name: "a\x00b"})
                problems: list[Any] = []
            except ValidationError as exc:
                problems = [e for e in exc.errors() if e["loc"][:1] == (field_name,)]
            assert problems, f"{name}.{field_name} took a NUL"
            checked += 1
    assert checked >= 30


# --- refs that are digits only must fit a 64-bit id ------------------------------------------

@pytest.mark.parametrize("big", ["9223372036854775808", "18446744073709551616", "1" + "0" * 50])
def test_a_ref_of_digits_over_64_bits_is_422_not_500(api, account, big: str) -> None:
    """Found in review: the digits reached the database as an id (SQLite: OverflowError;
    PostgreSQL: out of range), a 500."""
    before = _rows(api)
    for path, body, field in (
            ("/usage/metrics", {"code": "m1", "aggregation": "sum", "product": big}, "product"),
            *(("/reconciliation/vendor-mappings", {"kind": kind, "vendor_key": "k-1",
                                                   "target": big}, "target")
              for kind in ("customer", "product", "subscription"))):
        r = api.post(path, body)
        assert r.status_code == 422, (path, body, r.status_code, r.text)
        error = r.json()["error"]
        assert error["field"] == f"body.{field}" and error["value"] == big, error
        assert "64-bit" in error["message"], error
    assert _rows(api) == before


def test_the_largest_64_bit_id_is_only_not_found(api, account) -> None:
    top = str(2**63 - 1)
    assert api.post("/usage/metrics", {"code": "m1", "aggregation": "sum",
                                       "product": top}).status_code == 404
    for kind in ("customer", "product", "subscription"):
        r = api.post("/reconciliation/vendor-mappings",
                     {"kind": kind, "vendor_key": "k-1", "target": top})
        assert r.status_code == 404, (kind, r.text)


# --- NUL: refused by every string (SQLite stored it; PostgreSQL's driver refused it: a 500) ----

@pytest.mark.parametrize("path,body,field", [
    ("/reconciliation/vendor-mappings", {"kind": "customer", "vendor_key": "k\x00",
                                         "target": "ACC1"}, "vendor_key"),
    ("/reconciliation/vendor-mappings", {"kind": "customer", "vendor_key": "k-1",
                                         "target": "ACC1\x00"}, "target"),
    ("/reconciliation/vendor-mappings:remove", {"kind": "customer", "vendor_key": "k\x00"},
     "vendor_key"),
    ("/usage/metrics", {"code": "m2", "aggregation": "sum", "product": "API\x00"}, "product"),
    ("/usage/metrics", {"code": "m\x00", "aggregation": "sum", "product": "API"}, "code"),
    ("/usage/metrics", {"code": "m2", "aggregation": "sum", "product": "API",
                        "filters": {"env": ["prod\x00"]}}, "filters.env.0"),
])
def test_nul_in_a_mapping_or_metric_is_422(api, account, path: str, body: dict[str, Any],
                                           field: str) -> None:
    before = _rows(api)
    r = api.post(path, body)
    assert r.status_code == 422, (path, body, r.status_code, r.text)
    assert r.json()["error"]["field"] == f"body.{field}", r.text
    assert _rows(api) == before
