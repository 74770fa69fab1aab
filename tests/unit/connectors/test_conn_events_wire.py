"""The CRM event wire formats (``connectors.events``): what is read of each, what is refused."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from connectors.events import (
    SOAP_ACK,
    EventRefused,
    WireEvent,
    by_user,
    check_dataverse_auth,
    check_signature,
    parse_callout,
    parse_dataverse,
    parse_outbound,
    same_org,
)

ORG18 = "00D5g000004XyZaEAK"


def _outbound(org: str, inner: str) -> bytes:
    return ('<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
            '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
            f"<OrganizationId>{org}</OrganizationId>{inner}</notifications>"
            "</soapenv:Body></soapenv:Envelope>").encode()


NOTE = ('<Notification><Id>04l5g00000AbCdEAAV</Id><sObject xsi:type="sf:Account" '
        'xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>001000000000001AAA</sf:Id>'
        '<sf:Name>Forged name, never read</sf:Name></sObject></Notification>')


def test_an_outbound_message_gives_each_notification_id_with_its_object_and_record() -> None:
    [event] = parse_outbound(_outbound(ORG18, NOTE), ORG18)
    assert (event.event_id, event.crm_object, event.crm_id) == (
        "04l5g00000AbCdEAAV", "Account", "001000000000001AAA")
    assert parse_outbound(_outbound(ORG18, NOTE), ORG18[:15])   # a 15-character org id too
    assert "<Ack>true</Ack>" in SOAP_ACK


@pytest.mark.parametrize("org", ["00D5g000004XyZbEAK", "", "00D5g000004XyZ"])
def test_an_outbound_message_of_another_organization_is_401(org: str) -> None:
    with pytest.raises(EventRefused) as refused:
        parse_outbound(_outbound(org, NOTE), ORG18)
    assert refused.value.status == 401
    with pytest.raises(EventRefused):
        parse_outbound(_outbound(ORG18, NOTE), None)       # no org configured: none accepted


def test_xml_entity_expansion_is_refused_not_expanded() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><x>&b;</x>')
    with pytest.raises(EventRefused) as refused:
        parse_outbound(bomb, ORG18)
    assert refused.value.status == 400


def test_same_org_compares_the_15_character_form() -> None:
    assert same_org(ORG18, ORG18) and same_org(ORG18[:15], ORG18) and same_org(ORG18, ORG18[:15])
    assert not same_org(None, ORG18) and not same_org(ORG18[:14], ORG18)


def test_a_dataverse_context_gives_its_operation_id_else_request_id_else_the_header() -> None:
    ctx = {"MessageName": "Delete", "PrimaryEntityName": "Account",
           "PrimaryEntityId": "7D5E8F10-3A2B-4C1D-9E8F-0A1B2C3D4E5F",
           "OperationId": "00000000-0000-0000-0000-000000000000", "RequestId": None}
    event = parse_dataverse(json.dumps(ctx).encode(), {"x-request-id": "req-1"})
    assert (event.event_id, event.crm_object, event.crm_id, event.action) == (
        "req-1", "account", "7d5e8f10-3a2b-4c1d-9e8f-0a1b2c3d4e5f", "Delete")
    ctx["RequestId"] = "r-2"
    assert parse_dataverse(json.dumps(ctx).encode(), {}).event_id == "r-2"
    ctx["PrimaryEntityId"] = "not-a-guid"
    with pytest.raises(EventRefused) as refused:
        parse_dataverse(json.dumps(ctx).encode(), {})
    assert refused.value.status == 400 and "PrimaryEntityId" in refused.value.message


@pytest.mark.parametrize(("auth", "headers", "query", "ok"), [
    ("webhook_key", {}, {"code": "k"}, True),
    ("webhook_key", {}, {"code": "K"}, False),
    ("header", {"x-lb-key": "k"}, {}, True),
    ("header", {}, {"x-lb-key": "k"}, False),
    ("query_string", {}, {"x-lb-key": "k"}, True),
    ("query_string", {}, {}, False),
])
def test_the_three_dataverse_authentications(auth: str, headers: dict[str, str],
                                             query: dict[str, str], ok: bool) -> None:
    if ok:
        check_dataverse_auth(auth, "x-lb-key", "k", headers, query)
    else:
        with pytest.raises(EventRefused) as refused:
            check_dataverse_auth(auth, "x-lb-key", "k", headers, query)
        assert refused.value.status == 401 and "k" not in refused.value.message.split()


def test_a_callout_signature_is_hex_or_base64_of_the_raw_body() -> None:
    body = b'{"sobject":"Account","ids":["001000000000001AAA"]}'
    mac = hmac.new(b"secret", body, hashlib.sha256).digest()
    check_signature(body, "secret", mac.hex())
    check_signature(body, "secret", "sha256=" + mac.hex())
    check_signature(body, "secret", base64.b64encode(mac).decode())
    for given in (None, "", mac.hex()[:-1] + "0", hmac.new(b"other", body, "sha256").hexdigest()):
        with pytest.raises(EventRefused):
            check_signature(body, "secret", given)
    with pytest.raises(EventRefused):
        check_signature(body + b" ", "secret", mac.hex())          # the body changed


def test_a_callout_names_records_and_only_records() -> None:
    events = parse_callout(json.dumps({"sobject": "Quote", "event_id": "f1",
                                       "ids": ["0Q0000000000001AAA", "0Q0000000000001AAA"]})
                           .encode(), {})
    assert [(e.event_id, e.crm_object, e.crm_id) for e in events] == [
        ("f1:0Q0000000000001AAA", "Quote", "0Q0000000000001AAA")]
    assert parse_callout(b'{"sobject": "Account", "ids": ["001000000000001AAA"]}',
                         {})[0].event_id is None
    for bad in (b"[]", b'{"sobject": "Acc ount", "ids": ["001000000000001AAA"]}',
                b'{"sobject": "Account", "ids": []}', b'{"sobject": "Account", "ids": [1]}'):
        with pytest.raises(EventRefused) as refused:
            parse_callout(bad, {})
        assert refused.value.status == 400


# -- the echo of our own writes ---------------------------------------------------------------
US_DV, PERSON_DV = "75c2dad9-3d6a-e711-8102-e0071b6ac161", "11111111-2222-4333-8444-555555555555"
US_SF, PERSON_SF = "0055g00000ABCDEAA1", "0055g00000ZZZZZAA1"


def _context(user: str, initiating: str) -> bytes:
    return json.dumps({"MessageName": "Update", "PrimaryEntityName": "account",
                       "PrimaryEntityId": "7d5e8f10-3a2b-4c1d-9e8f-0a1b2c3d4e5f",
                       "OperationId": "a2b3c4d5-0000-4000-8000-000000000001",
                       "UserId": user, "InitiatingUserId": initiating}).encode()


@pytest.mark.parametrize("user,initiating,ours", [
    (US_DV, US_DV, True),
    (US_DV.upper(), US_DV, True),                 # GUIDs without case
    (PERSON_DV, US_DV, False),                    # we acted for a person (impersonation)
    (US_DV, PERSON_DV, False),                    # a person's call ran as us
    (PERSON_DV, PERSON_DV, False),
])
def test_a_dataverse_event_is_ours_only_when_every_user_it_names_is_us(
        user: str, initiating: str, ours: bool) -> None:
    event = parse_dataverse(_context(user, initiating), {})
    assert by_user(event, US_DV) is ours


def test_an_event_naming_no_user_or_a_connection_that_knows_none_is_never_ours() -> None:
    assert not by_user(WireEvent("e", "account", "x", "Update", ()), US_DV)
    assert not by_user(parse_dataverse(_context(US_DV, US_DV), {}), None)


def test_an_outbound_message_names_the_records_last_modifier_when_selected() -> None:
    note = NOTE.replace("<sf:Name>", f"<sf:LastModifiedById>{US_SF}</sf:LastModifiedById>"
                                     "<sf:Name>")
    [event] = parse_outbound(_outbound(ORG18, note), ORG18)
    assert event.modified_by == (US_SF,)
    assert by_user(event, US_SF[:15])                       # 15 or 18 characters
    assert not by_user(event, PERSON_SF)
    [plain] = parse_outbound(_outbound(ORG18, NOTE), ORG18)   # not selected: not ours
    assert plain.modified_by == () and not by_user(plain, US_SF)


def test_a_callout_names_its_modifier_for_every_id_or_per_id() -> None:
    ids = ["001000000000001AAA", "001000000000002AAA"]
    one = parse_callout(json.dumps({"sobject": "Account", "ids": ids,
                                    "modified_by": US_SF}).encode(), {})
    assert [by_user(e, US_SF) for e in one] == [True, True]
    each = parse_callout(json.dumps({"sobject": "Account", "ids": ids,
                                     "modified_by": {ids[0]: US_SF}}).encode(), {})
    assert [by_user(e, US_SF) for e in each] == [True, False]
    with pytest.raises(EventRefused) as refused:
        parse_callout(json.dumps({"sobject": "Account", "ids": ids,
                                  "modified_by": 5}).encode(), {})
    assert refused.value.status == 400 and "modified_by" in refused.value.message


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000,
                                  b'{"a":' * 50_000 + b"1" + b"}" * 50_000])
@pytest.mark.parametrize("parse", [parse_dataverse, parse_callout])
def test_a_json_body_nested_past_the_parsers_depth_is_refused_400(parse: object,
                                                                 body: bytes) -> None:
    """JSON nested deeper than Python's parser goes (within the 512 KB a receiver takes)
    raised RecursionError out of the parse: a 500 and a traceback, which the CRM retries with
    the same body. It is a 400 like any body that is not a context or callout."""
    assert callable(parse)
    with pytest.raises(EventRefused) as info:
        parse(body, {})
    assert info.value.status == 400 and "JSON" in str(info.value)
