"""``[provisioner] kind = "crm"``: provisioning is the quote's status field in the CRM, found
from the order's source reference (parsed by ``sync.refs``, the inverse of how the hand-off
built it)."""
from __future__ import annotations

from decimal import Decimal

import pytest
from fake_crm import FakeCRM

from billing_core.adapters.provisioners import ProvisioningTask
from config.settings import load_settings
from jobs.worker import Worker
from sync.refs import source_ref


def _worker(engine, tmp_path, crm: FakeCRM) -> Worker:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[provisioner]\nkind = "crm"\n'
                   '[connections.sf]\ncrm = "salesforce"\nurl = "https://x.example"\n'
                   '[connections.sf.credentials]\nclient_id = "id"\n'
                   'client_secret = "env:NOPE"\n')
    return Worker(engine, load_settings(cfg), connector_factory=lambda s: crm)


def _task(order_ref: str) -> ProvisioningTask:
    return ProvisioningTask(
        request_id=1, idempotency_key="k", attempt=1, account_id=1, account_ext_source="sf",
        account_ext_id="A1", account_name="Acme", order_id=1, order_ref=order_ref,
        product_id=1, product_sku="SEAT", quantity=Decimal(1))


def test_the_quote_of_the_orders_source_ref_is_marked(sqlite_engine, tmp_path):
    crm = FakeCRM("sf")
    worker = _worker(sqlite_engine, tmp_path, crm)
    try:
        outcome = worker.provisioner().provision(_task(source_ref("sf", "0Q0:odd", 3)))
    finally:
        worker.close()
    assert outcome == "dispatched"
    assert crm.pushed == {("quote", "0Q0:odd"): {"provisioning_status": "provisioning requested"}}


@pytest.mark.parametrize(("kind", "status"), [
    ("increase", "increase requested"), ("decrease", "decrease requested"),
    ("deprovision", "deprovisioning requested")])
def test_each_kind_of_change_says_what_is_asked_for(sqlite_engine, tmp_path, kind: str,
                                                    status: str) -> None:
    """Regression: a deprovision (seats taken away) was written "provisioning requested"."""
    from dataclasses import replace
    crm = FakeCRM("sf")
    worker = _worker(sqlite_engine, tmp_path, crm)
    try:
        task = replace(_task(source_ref("sf", "0Q0:x", 1)), change_kind=kind)
        assert worker.provisioner().provision(task) == "dispatched"
    finally:
        worker.close()
    assert crm.pushed == {("quote", "0Q0:x"): {"provisioning_status": status}}


def test_an_order_not_handed_off_from_a_quote_is_refused_by_name(sqlite_engine, tmp_path):
    from billing_core.adapters.provisioners import ProvisionError
    crm = FakeCRM("sf")
    worker = _worker(sqlite_engine, tmp_path, crm)
    try:
        with pytest.raises(ProvisionError, match="manual-7"):
            worker.provisioner().provision(_task("manual-7"))
    finally:
        worker.close()
    assert crm.writes == []
