"""Admin and ops endpoints: resync trigger (answers at once with the run id), run status,
status overview, liveness/readiness, Prometheus metrics, the body size limit, and the OpenAPI
document (served, with examples that match real answers)."""
from __future__ import annotations

from api_helpers import TestClient
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from jobs.api.app import build_app
from jobs.api.models import CreateMemo, RecordPayment


def test_sync_run_answers_with_the_run_id_at_once(api):
    r = api.post("/sync:run", {"connection": "salesforce", "object": "account", "full": True,
                               "account": "001A"}, scope="admin")
    assert r.status_code == 202, r.text
    assert r.json() == {"run_id": 1, "status_url": "/sync/runs/1"}
    assert api.sync.started == [("salesforce", "account", True, "001A")]
    run = api.get("/sync/runs/1", scope="admin").json()
    assert run["id"] == 1 and run["outcome"] == "running"
    assert api.get("/sync/runs/2", scope="admin").status_code == 404
    r = api.post("/sync:run", {"connection": "nope"}, scope="admin")
    assert r.status_code == 404 and r.json()["error"]["field"] == "connection"
    r = api.post("/sync:run", {"connection": "salesforce", "object": "invoice"}, scope="admin")
    assert r.status_code == 422 and r.json()["error"]["field"] == "object"
    r = api.post("/sync:run", {"connection": "bad name!"}, scope="admin")
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.connection"


def test_sync_without_an_engine_is_503(engine, api):
    app = build_app(engine, Settings())
    client = TestClient(app)
    r = client.post("/sync:run", json={"connection": "salesforce"}, headers=api.headers())
    assert r.status_code == 503 and r.json()["error"]["code"] == "sync_unavailable"


def test_status(api, account):
    api.post(f"/accounts/{account}/hold:place", {"note": "x"}, scope="admin")
    body = api.get("/status", scope="admin").json()
    assert body["holds"] == {"manual": 1}
    assert body["scheduler"]["running"] is True
    assert body["database"]["dialect"] == api.engine.dialect.name


def test_health_and_readiness(api):
    assert api.client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "scheduler": "ok"}
    api.scheduler.running = False
    r = api.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["scheduler"] == "not running"


def test_metrics_in_prometheus_text_format(api, account, invoice):
    api.post(f"/accounts/{account}/hold:place", {"note": "x"}, scope="admin")
    api.get("/billing/credit-memos")
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    holds = {s.labels["reason"]: s.value for s in families["ledgerbridge_holds"].samples}
    assert holds == {"crm": 0, "credit_limit": 0, "overdue": 0, "manual": 1}
    requests = [s for s in families["ledgerbridge_api_requests"].samples
                if s.name.endswith("_total") and s.labels["route"] == "/billing/credit-memos"]
    assert requests and requests[0].labels["status"] == "200"
    allowed = families["ledgerbridge_crm_api_budget_allowed"].samples[0]
    assert allowed.labels == {"connection": "salesforce"} and allowed.value == 680
    for name in ("ledgerbridge_queue_depth", "ledgerbridge_sync_runs",
                 "ledgerbridge_bill_run_duration_seconds"):
        assert name in families, name



def test_request_methods_nobody_serves_do_not_grow_the_metrics(api):
    """The request counter is labelled by method, and uvicorn's h11 takes any token as a
    method: before any token is checked, each made-up method (``M0000``, ``M0001``...) was a
    series of its own, kept for the life of the daemon and written in every scrape. A method
    the API does not know counts as ``other``."""
    for i in range(40):
        assert api.client.request(f"M{i:04d}", f"/nope/{i}").status_code in (404, 405)
    api.client.request("M0000", "/billing/credit-memos")
    families = {f.name: f for f in text_string_to_metric_families(api.get("/metrics").text)}
    methods = {s.labels["method"] for s in families["ledgerbridge_api_requests"].samples}
    assert methods <= {"GET", "POST", "other"}, sorted(methods)[:5]
    unmatched = [s for s in families["ledgerbridge_api_requests"].samples
                 if s.name.endswith("_total") and s.labels["method"] == "other"]
    assert sum(s.value for s in unmatched) == 41

def test_metrics_count_sync_runs_by_outcome_kind_and_records_per_object(api):
    # Regression: each distinct "failed: <error>" outcome gave its own sample, so two failed
    # runs showed as two samples with the same labels instead of one sample of 2.
    from sync.runs import finish_run, start_run

    for error, read in (("boom", 3), ("other", 4)):
        report = start_run(api.engine, "sf", "test", {})
        report.stats("account").read = read
        report.stats("account").api_calls = 2
        report.outcome = f"failed: {error}"
        finish_run(api.engine, report)
    families = {f.name: f for f in text_string_to_metric_families(api.get("/metrics").text)}
    runs = [(s.labels, s.value) for s in families["ledgerbridge_sync_runs"].samples
            if s.name.endswith("_total")]
    assert runs == [({"connection": "sf", "outcome": "failed"}, 2)]
    read = [s.value for s in families["ledgerbridge_sync_records"].samples
            if s.name.endswith("_total") and s.labels["kind"] == "read"]
    assert read == [7]
    calls = [s.value for s in families["ledgerbridge_crm_api_calls"].samples
             if s.name.endswith("_total")]
    assert calls == [4]


def test_bodies_over_the_limit_are_413(api):
    big = b'{"x": "' + b"a" * (1024 * 1024) + b'"}'
    r = api.client.post("/billing/credit-memos", content=big,
                        headers={**api.headers(), "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():
        for _ in range(20):
            yield b"a" * 65536

    r = api.client.post("/billing/credit-memos", content=chunks(),
                        headers={**api.headers(), "content-type": "application/json"})
    assert r.status_code == 413


def test_openapi_document_and_its_examples(api, account):
    doc = api.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    apply = doc["paths"]["/billing/credit-memos:apply"]["post"]
    assert {"200", "401", "403", "409", "422"} <= set(apply["responses"])
    # the request examples are accepted as they are (given the ledger they name exists)
    memo = CreateMemo.model_config["json_schema_extra"]["examples"][0]
    r = api.post("/billing/credit-memos", {**memo, "account_id": account})
    assert r.status_code == 201, r.text
    payment = RecordPayment.model_config["json_schema_extra"]["examples"][0]
    assert api.post("/billing/payments", {**payment, "account_id": account}).status_code == 201
    # the error example has the shape of a real error answer
    example = doc["components"]["schemas"]["ErrorDetail"]["properties"]
    real = api.post("/billing/credit-memos", {**memo, "account_id": account,
                                              "amount": "1.001"}).json()["error"]
    assert set(real) == set(example)


def test_status_shows_what_the_cli_shows(api):
    overview = api.get("/status", scope="admin").json()["overview"]
    assert {"runs", "accounts_on_hold", "outbox_pending", "attention"} <= set(overview)
    assert "no sync run recorded yet" in overview["attention"]


def test_invoices_list_and_filter(api, account, invoice):
    listed = api.get("/billing/invoices", params={"account_id": account}).json()
    assert [i["number"] for i in listed["items"]] == ["INV-000001"]
    assert listed["items"][0]["balance"] == "100.00"
    assert api.get("/billing/invoices", params={"status": "paid"}).json()["items"] == []
    r = api.get("/billing/invoices", params={"status": "lost"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "query.status"


def test_serving_off_loopback_warns(engine, caplog):
    import logging
    import socket

    import httpx

    from jobs.api.app import serve_in_thread

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(engine, Settings())
    with caplog.at_level(logging.WARNING, logger="jobs.api.app"):
        handle = serve_in_thread(app, "0.0.0.0", port)
    try:
        assert "without TLS" in caplog.text
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
    finally:
        handle.stop()
    assert not handle.thread.is_alive()


def test_response_examples_have_the_shape_of_real_answers(api, account, invoice):
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    memo = api.post("/billing/credit-memos", {"account_id": account, "amount": "100.00",
                                              "reason": "Goodwill", "activate": True}).json()
    batch = api.post("/billing/credit-memos:apply", {"items": [
        {"credit_memo": memo["number"],
         "applications": [{"target": "INV-000001", "amount": "40.00"}]},
        {"credit_memo": memo["number"],
         "applications": [{"target": "INV-000001", "amount": "500.00"}]}]}).json()
    # (the document leaves null fields out of examples: they are the optional ones)
    doc_example = schemas["DocumentOut"]["examples"][0]
    real = batch["results"][0]["result"]
    optional = set(schemas["DocumentOut"]["properties"]) - set(schemas["DocumentOut"]["required"])
    assert set(doc_example) <= set(real)
    assert set(real) - set(doc_example) <= optional
    assert {k for k in set(real) - set(doc_example) if real[k] is not None} == set()
    assert set(doc_example["applications"][0]) == set(real["applications"][0])
    batch_example = schemas["BatchResult"]["examples"][0]
    assert [r["ok"] for r in batch_example["results"]] == [r["ok"] for r in batch["results"]]
    assert batch_example["results"][1]["error"]["code"] == batch["results"][1]["error"]["code"]
    assert batch_example["results"][1]["error"]["field"] == batch["results"][1]["error"]["field"]


def test_an_unreachable_database_is_503_with_retry_after(api):
    from billing_core.adapters.db import make_engine

    gone = make_engine("postgresql://postgres@127.0.0.1:1/test",
                       connect_args={"connect_timeout": 2})
    client = TestClient(build_app(gone, Settings()), raise_server_exceptions=False)
    assert client.get("/healthz").status_code == 200          # liveness needs no database
    for method, path in (("GET", "/billing/credit-memos"), ("POST", "/billing/payments")):
        r = client.request(method, path, headers=api.headers("admin"),
                           json={"account_id": 1, "amount": "1.00", "reference": "x"})
        assert r.status_code == 503, (path, r.text)
        assert r.headers["Retry-After"] == "2"
        assert r.json()["error"]["code"] == "database_unavailable"
    gone.dispose()
