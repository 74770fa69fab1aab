"""The webhook provisioner against a real local HTTP server (loopback, a thread): the signature
verifies, the idempotency key is stable across retries, 503 then 200 dispatches once, 400 fails
at once, timeouts retry; nothing sleeps for real (the sleeper is injected)."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from billing_core.adapters.provisioners import ProvisionError
from billing_core.adapters.provisioners.base import ProvisioningTask
from billing_core.adapters.provisioners.webhook import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    WebhookProvisioner,
    verify,
)
from config.settings import ConfigError, ProvisionerSettings
from jobs.provisioners import build_provisioner

SECRET = "s3cret-for-tests"


class Receiver:
    """Answers each POST with the next scripted status; records body, headers, verdict."""

    def __init__(self) -> None:
        self.script: list[int | str] = []
        self.calls: list[dict[str, object]] = []
        self.release = threading.Event()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append({
                    "key": self.headers[IDEMPOTENCY_HEADER],
                    "signed": verify(body, SECRET, self.headers[SIGNATURE_HEADER]),
                    "body": json.loads(body)})
                step = receiver.script.pop(0) if receiver.script else 200
                if step == "hang":
                    receiver.release.wait(5)   # the client has timed out by now
                    return
                self.send_response(int(step))
                if step == 429:
                    self.send_header("Retry-After", "7")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), rec.handler())
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield rec, f"http://127.0.0.1:{server.server_address[1]}/provision"
    finally:
        rec.release.set()
        server.shutdown()
        server.server_close()


TASK = ProvisioningTask(
    request_id=7, idempotency_key="lbprov-abc", attempt=1, account_id=3,
    account_ext_source="sf", account_ext_id="001X", account_name="Acme", order_id=9,
    order_ref="sf:Q1:rev1", product_id=2, product_sku="LIC", quantity=Decimal(12),
    subscription_id=4)


def _provisioner(url: str, sleeps: list[float], **kw: object) -> WebhookProvisioner:
    return WebhookProvisioner(url, SECRET, sleep=sleeps.append, **kw)  # type: ignore[arg-type]


def test_signed_body_with_the_stored_key(receiver):
    rec, url = receiver
    assert _provisioner(url, []).provision(TASK) == "dispatched"
    (call,) = rec.calls
    assert call["signed"] is True and call["key"] == "lbprov-abc"
    assert call["body"]["quantity"] == "12" and call["body"]["account"]["external_id"] == "001X"
    assert verify(b"tampered", SECRET, "sha256=00") is False


def test_503_then_200_dispatches_once_with_the_same_key(receiver):
    rec, url = receiver
    rec.script = [503, 429, 200]
    sleeps: list[float] = []
    assert _provisioner(url, sleeps).provision(TASK) == "dispatched"
    assert [c["key"] for c in rec.calls] == ["lbprov-abc"] * 3
    assert all(c["signed"] for c in rec.calls)
    assert len(sleeps) == 2 and sleeps[1] == 7.0       # Retry-After honoured


def test_400_fails_at_once_without_retries(receiver):
    rec, url = receiver
    rec.script = [400]
    sleeps: list[float] = []
    with pytest.raises(ProvisionError) as info:
        _provisioner(url, sleeps).provision(TASK)
    assert info.value.retriable is False and info.value.status == 400
    assert len(rec.calls) == 1 and sleeps == []


def test_gives_up_after_max_attempts(receiver):
    rec, url = receiver
    rec.script = [500, 502, 503]
    with pytest.raises(ProvisionError, match="3 attempt") as info:
        _provisioner(url, [], max_attempts=3).provision(TASK)
    assert info.value.retriable is True and len(rec.calls) == 3


def test_timeout_is_retried_with_the_same_key(receiver):
    rec, url = receiver
    rec.script = ["hang", 200]
    sleeps: list[float] = []
    prov = _provisioner(url, sleeps, timeout_seconds=0.2)
    assert prov.provision(TASK) == "dispatched"
    rec.release.set()
    assert [c["key"] for c in rec.calls] == ["lbprov-abc", "lbprov-abc"]
    assert len(sleeps) == 1


def test_build_from_settings_reads_the_secret_from_the_environment(receiver):
    _, url = receiver
    settings = ProvisionerSettings(kind="webhook", url=url, secret_env="LB_HOOK_SECRET")
    prov = build_provisioner(settings, env={"LB_HOOK_SECRET": SECRET})
    assert SECRET not in repr(prov)
    with pytest.raises(ConfigError, match="LB_HOOK_SECRET"):
        build_provisioner(settings, env={})
    with pytest.raises(ConfigError, match="secret_env"):
        build_provisioner(ProvisionerSettings(kind="webhook", url=url), env={})
    with pytest.raises(ConfigError, match="kind"):
        build_provisioner(ProvisionerSettings(kind="carrier-pigeon"))
    with pytest.raises(ConfigError, match="sync"):
        build_provisioner(ProvisionerSettings(kind="crm"))
    assert build_provisioner(ProvisionerSettings()).name == "log"
    crm = build_provisioner(ProvisionerSettings(kind="crm"), callback=lambda t: "provisioned")
    assert crm.provision(TASK) == "provisioned"


class KeyedReceiver:
    """A receiver that keeps its idempotency keys as ledgerbridge's own API does (and as the
    IETF Idempotency-Key draft asks): the first delivery of a key acts, then (``stall``) answers
    only after the sender timed out; a delivery of a known key with the same body replays 200,
    with another body is refused 422 (a different request under a reused key)."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.acted: list[str] = []
        self.refused: list[str] = []
        self.stall = threading.Event()
        self.release = threading.Event()
        self.stalled = threading.Event()
        self.stall.set()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers[IDEMPOTENCY_HEADER]
                status = 200
                if key not in receiver.bodies:
                    receiver.bodies[key] = body
                    receiver.acted.append(key)
                    if receiver.stall.is_set():
                        receiver.stall.clear()
                        receiver.stalled.set()
                        receiver.release.wait(30)   # acted; the answer comes too late
                        return
                elif receiver.bodies[key] != body:
                    receiver.refused.append(key)
                    status = 422
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def test_a_resend_after_a_timeout_that_acted_is_the_same_request(ledger, clock):
    """The provisioning endpoint acts, then answers after the webhook's timeout: the request
    is failed (retriable); ``provisioning retry`` sends it again with the same key and the
    same body, which a receiver that checks its keys accepts as the first; it acted once and
    the request is dispatched. (The body carried the dispatch's attempt number, so the resend
    was a different body under the same key: refused 422, the request failed for good though
    its service was provisioned.)"""
    from credit_helpers import licence_order, make_account, make_products

    from billing_core.service.gate import accept_order
    from billing_core.service.provisioning import dispatch_pending, list_requests, retry_request

    acc, products = ledger.run(lambda u: (make_account(u, "W1"), make_products(u)))
    ledger.run(lambda u: accept_order(u, licence_order(acc, "q1", 3, products,
                                                       ledger.clock.today)))
    rec = KeyedReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), rec.handler())
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        hook = WebhookProvisioner(f"http://127.0.0.1:{server.server_address[1]}/p", SECRET,
                                  max_attempts=1, timeout_seconds=0.5, sleep=lambda _s: None)
        first = dispatch_pending(ledger.engine, hook, clock=clock)
        assert rec.stalled.is_set() and len(first.failed) == 1, first
        rec.release.set()
        request_id = first.failed[0]
        ledger.run(lambda u: retry_request(u, request_id))
        again = dispatch_pending(ledger.engine, hook, clock=clock)
    finally:
        rec.release.set()
        server.shutdown()
        server.server_close()
    assert rec.refused == [], "the resend was refused as another body under the same key"
    assert again.dispatched == [request_id], again
    assert len(rec.acted) == 1
    with ledger.engine.connect() as conn:
        assert [r["state"] for r in list_requests(conn)] == ["dispatched"]
