"""The field maps' deal fields (issue 14): relationship paths read from Salesforce's nested
answer, the CPQ defaults, the Dataverse overrides. No I/O beyond the packaged maps."""
from __future__ import annotations

from datetime import date

from connectors import fieldmap
from connectors.fieldmap import follow


def test_a_relationship_path_reads_the_nested_record() -> None:
    row = {"attributes": {"type": "SBQQ__Quote__c"}, "Id": "a0Q2",
           "SBQQ__MasterContract__r": {"attributes": {"type": "Contract"},
                                       "SBQQ__Quote__c": "a0Q1"},
           "SBQQ__Opportunity2__r": None}
    assert follow(row, "SBQQ__MasterContract__r.SBQQ__Quote__c") == (True, "a0Q1")
    assert follow(row, "sbqq__mastercontract__r.sbqq__quote__c") == (True, "a0Q1")
    # an empty lookup is null all the way down; a path the answer lacks is not there at all
    assert follow(row, "SBQQ__Opportunity2__r.SBQQ__RenewedContract__r.SBQQ__Quote__c") == (
        True, None)
    assert follow(row, "Other__r.Name") == (False, None)


def test_the_cpq_map_reads_type_and_origins_and_no_term_end_as_a_cancellation() -> None:
    quote = fieldmap.load("salesforce_cpq").object("quote")
    assert {c: s.crm for c, s in quote.fields.items() if c in (
        "type", "origin_quote", "origin_contract", "renewed_quote", "renewed_contract")} == {
        "type": "SBQQ__Type__c", "origin_contract": "SBQQ__MasterContract__c",
        "origin_quote": "SBQQ__MasterContract__r.SBQQ__Quote__c",
        "renewed_contract": "SBQQ__Opportunity2__r.SBQQ__RenewedContract__c",
        "renewed_quote": "SBQQ__Opportunity2__r.SBQQ__RenewedContract__r.SBQQ__Quote__c"}
    # SBQQ__EndDate__c is a term end: an auto-renewing subscription goes on past it
    assert "end_date" not in quote.fields
    assert "SBQQ__MasterContract__r.SBQQ__Quote__c" in quote.select()
    rec = quote.to_canonical({"Id": "a0Q2", "SBQQ__Type__c": "Amendment",
                              "SBQQ__MasterContract__c": "800C",
                              "SBQQ__MasterContract__r": {"SBQQ__Quote__c": "a0Q1"},
                              "SBQQ__Opportunity2__r": None})
    assert (rec["type"], rec["origin_quote"], rec["origin_contract"], rec["renewed_quote"]) == (
        "Amendment", "a0Q1", "800C", None)


def test_a_plain_salesforce_map_has_no_deal_fields() -> None:
    quote = fieldmap.load("salesforce").object("quote")
    assert not {"type", "origin_quote", "end_date"} & set(quote.fields)


def test_the_dataverse_deal_overrides() -> None:
    m = fieldmap.load("dynamics", "dynamics_deals")
    quote = m.object("quote")
    rec = quote.to_canonical({"quoteid": "q", "new_quotetype": 100000002,
                              "_new_renewsquote_value": "r", "new_canceldate": "2027-02-15"})
    assert (rec["type"], rec["origin_quote"], rec["end_date"]) == (
        "renewal", "r", date(2027, 2, 15))
    assert m.object("quote_line").fields["end_date"].crm == "new_canceldate"
    assert "new_quotetype" not in fieldmap.load("dynamics").object("quote").select()
