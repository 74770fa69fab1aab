"""The sandbox's change-event bodies, built without I/O (connectors/sandbox/notify.py).

Worked example (Dataverse): a quote written with customer 9f..., state Won and a start date
entered as a "User Local" date 2026-01-01 in UTC+1 (stored as 2025-12-31T23:00:00Z) becomes
Target attributes customerid = EntityReference(account, 9f...), statecode =
OptionSetValue(2), totalamount = Money(1200.5), effectivefrom = /Date(1767222000000)/.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import xml.etree.ElementTree as ET
from decimal import Decimal

from connectors.sandbox.notify import (
    ChangeEvent,
    NotifyConfig,
    _acked,
    dataverse_context,
    outbound_message,
    sign,
)

AT = dt.datetime(2026, 11, 21, 23, 43, 43, 120000, tzinfo=dt.UTC)
CUSTOMER = "9f000000-0000-4000-8000-000000000001"
QUOTE = "0a000000-0000-4000-8000-000000000002"
USER = "0b000000-0000-4000-8000-000000000003"
ORG = {"organization_id": "0c000000-0000-4000-8000-000000000004",
       "business_unit_id": "0d000000-0000-4000-8000-000000000005", "organization_name": "o"}
NS = {"out": "http://soap.sforce.com/2005/09/outbound",
      "sf": "urn:sobject.enterprise.soap.sforce.com"}


def test_dataverse_target_attributes_use_the_sdk_types() -> None:
    values = {"quoteid": QUOTE, "_customerid_value": CUSTOMER, "statecode": 2,
              "totalamount": Decimal("1200.50"), "effectivefrom": "2025-12-31T23:00:00Z",
              "new_canceldate": "2026-03-01", "name": "Q", "revisionnumber": 1,
              "versionnumber": 99, "_modifiedby_value": USER}
    event = ChangeEvent("dataverse", "Update", "quotes", QUOTE, values, USER, AT, dict(values))
    ctx = json.loads(dataverse_context(event, ORG))
    assert (ctx["MessageName"], ctx["PrimaryEntityName"], ctx["PrimaryEntityId"]) == (
        "Update", "quote", QUOTE)
    assert ctx["OrganizationId"] == ORG["organization_id"] and ctx["UserId"] == USER
    assert ctx["OperationCreatedOn"] == "/Date(1795304623120)/"
    target = ctx["InputParameters"][0]["value"]
    attrs = {a["key"]: a["value"] for a in target["Attributes"]}
    contracts = "http://schemas.microsoft.com/xrm/2011/Contracts"
    assert attrs["customerid"] == {"__type": f"EntityReference:{contracts}", "Id": CUSTOMER,
                                   "KeyAttributes": [], "LogicalName": "account",
                                   "Name": None, "RowVersion": None}
    assert attrs["modifiedby"]["LogicalName"] == "systemuser"
    assert attrs["statecode"] == {"__type": f"OptionSetValue:{contracts}", "Value": 2}
    assert attrs["totalamount"] == {"__type": f"Money:{contracts}", "Value": 1200.5}
    assert attrs["effectivefrom"] == "/Date(1767222000000)/"
    assert attrs["new_canceldate"] == "/Date(1772323200000)/"      # 2026-03-01T00:00Z
    assert attrs["revisionnumber"] == 1 and "versionnumber" not in attrs
    assert ctx["OutputParameters"] == [] and ctx["PostEntityImages"][0]["key"] == "PostImage"


def test_dataverse_delete_targets_a_reference_and_trimming_drops_parameters() -> None:
    event = ChangeEvent("dataverse", "Delete", "accounts", CUSTOMER, {}, USER, AT)
    ctx = json.loads(dataverse_context(event, ORG))
    assert ctx["InputParameters"][0]["value"]["__type"].startswith("EntityReference:")
    assert ctx["InputParameters"][0]["value"]["LogicalName"] == "account"
    assert ctx["PostEntityImages"] == []
    trimmed = json.loads(dataverse_context(event, ORG, trimmed=True))
    assert trimmed["InputParameters"] == [] and trimmed["PrimaryEntityId"] == CUSTOMER


def test_outbound_message_envelope() -> None:
    account = "001Dn00000000AbIAI"
    row: dict[str, object] = {"Id": account, "Name": "A & B <Ltd>", "Credit_Hold__c": False,
           "Credit_Limit__c": Decimal("2500.00"), "BillingStateCode": None,
           "SystemModstamp": AT, "Last_Invoice_Date__c": dt.date(2026, 1, 31)}
    events = [("04lDn0000000001IAA", ChangeEvent("salesforce", "Update", "Account", account,
                                                 row, "005", AT))]
    text = outbound_message("00DDn0000000001IAA", "04kDn0000000001IAA", "https://h:1",
                            "Account", events)
    root = ET.fromstring(text)
    note = root.find(".//out:notifications", NS)
    assert note is not None
    assert note.findtext("out:EnterpriseUrl", namespaces=NS) == (
        "https://h:1/services/Soap/c/59.0/00DDn0000000001")
    sobject = note.find("out:Notification/out:sObject", NS)
    assert sobject is not None
    fields = {child.tag.split("}")[1]: child.text for child in sobject}
    assert fields == {"Id": account, "Name": "A & B <Ltd>", "Credit_Hold__c": "false",
                      "Credit_Limit__c": "2500.00",
                      "SystemModstamp": "2026-11-21T23:43:43.120Z",
                      "Last_Invoice_Date__c": "2026-01-31"}           # null fields left out
    selected = outbound_message("00D", "04k", "https://h", "Account", events, ("Name",))
    sobject = ET.fromstring(selected).find(".//out:sObject", NS)
    assert sobject is not None and [c.tag.split("}")[1] for c in sobject] == ["Id", "Name"]


def test_ack_signature_and_targets() -> None:
    assert _acked(b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>'
                  b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
                  b'<Ack>true</Ack></notificationsResponse></e:Body></e:Envelope>')
    assert not _acked(b"<Ack>false</Ack>") and not _acked(b"not xml") and not _acked(b"{}")
    raw = b'{"sobject":"Account","ids":["001"]}'
    assert sign("k", raw) == hmac.new(b"k", raw, hashlib.sha256).hexdigest()
    cfg = NotifyConfig(url="http://r", salesforce_form="both", dataverse_connection="dv1")
    assert [cfg.target(k) for k in ("dataverse", "soap", "json")] == [
        "http://r/events/dataverse/dv1", "http://r/events/salesforce/sf",
        "http://r/events/salesforce/sf/json"]
    assert NotifyConfig(dataverse_url="http://d").target("soap") is None
