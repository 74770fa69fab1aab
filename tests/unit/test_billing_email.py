"""Billing contacts (issue 16, item 3): the addresses an account's documents are emailed to,
parsed by billing's rule and mapped from the CRM with the boundary's checks."""
from __future__ import annotations

import pytest

from billing_core.domain.contacts import normalize_emails, parse_emails
from billing_core.domain.errors import ValidationError
from sync.mapping import Invalid, map_account

_ACC = {"crm_id": "001A", "name": "Acme", "currency": "USD"}


def test_several_addresses_split_by_semicolon_or_comma_deduplicated_in_order() -> None:
    assert parse_emails(" ap@acme.com; CFO@acme.co.uk ,ap@ACME.com,, ") == \
        ["ap@acme.com", "CFO@acme.co.uk"]
    assert normalize_emails("ap@acme.com;cfo@acme.com") == "ap@acme.com, cfo@acme.com"
    assert normalize_emails("  ") is None and normalize_emails(None) is None


@pytest.mark.parametrize("value, bad", [
    ("ap@acme", "'ap@acme' has no valid domain"),
    ("ap acme@x.com", "is not an email address"),
    ("ok@x.com; <ap@x.com>", "'<ap@x.com>' is not an email address"),
    ("a@@x.com", "is not an email address"),
    ("a@x..com", "has no valid domain"),
])
def test_a_bad_address_is_refused_naming_field_and_value(value: str, bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_emails(value)
    assert err.value.field == "billing_email" and err.value.value == value
    assert bad in err.value.problem


def test_the_crm_mapping_reads_billing_email_and_quarantines_a_bad_one() -> None:
    assert map_account(_ACC).billing_email is None      # not mapped: kept as it is
    assert map_account({**_ACC, "billing_email": "ap@acme.com,b@acme.com"}).billing_email == \
        "ap@acme.com, b@acme.com"
    with pytest.raises(Invalid) as err:
        map_account({**_ACC, "billing_email": "not-an-address"})
    assert (err.value.field, err.value.value) == ("billing_email", "not-an-address")
