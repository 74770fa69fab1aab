"""Dataverse Web API payloads as Microsoft's own documentation shows them, fed to our
connector, the sync and the webhook receiver (HTTP stubbed with ``responses``, as the
connector unit tests do; their settings in ``conn_support``).

Every test names the documentation page its payload shape comes from (the pages are also in
the MicrosoftDocs/powerapps-docs repository). Values are adapted to our field map
(``config/fieldmaps/dynamics.toml``); the shape, the annotations (``@odata.*``,
``@OData.Community.Display.V1.FormattedValue``, ``@Microsoft.Dynamics.CRM.*``), the number,
date and time formats and the extra keys are the docs'. Where billing cannot bill a documented
payload as the CRM means it (a quote in another currency, a discount amount on the whole
quote, a line it refused), the quote is refused naming the field, never billed otherwise.
"""
from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

FAKES = Path(__file__).resolve().parents[1] / "unit" / "connectors"
if str(FAKES) not in sys.path:
    sys.path.insert(0, str(FAKES))

from conn_support import D365_URL, ENV, NOW, Sleeper, d365_settings  # noqa: E402
from events_config import DV_KEY, events_settings  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import Engine, select  # noqa: E402

from billing_core.adapters.tables import accounts, orders, subscriptions  # noqa: E402
from billing_core.service import ledger_uow  # noqa: E402
from connectors.base import AuthError, FatalError, RetriableError  # noqa: E402
from connectors.cursor import decode  # noqa: E402
from connectors.registry import build_connector  # noqa: E402
from jobs.api.app import build_app  # noqa: E402
from sync import mapping  # noqa: E402
from sync.engine import SyncOptions, run_cycle  # noqa: E402
from sync.reconcile import apply_page  # noqa: E402
from sync.tables import event_inbox, handoffs, quarantine  # noqa: E402

API = f"{D365_URL}/api/data/v9.2/"
AUTHORITY = "https://login.example.com/tenant1"
DOCS = "https://learn.microsoft.com/en-us/power-apps/developer/data-platform/"
USD = "6ec1a2e7-2f7e-e711-80f0-00155db19e6d"
EUR = "7fd2b3f8-2f7e-e711-80f0-00155db19e6d"
ACC1 = "60c4e274-0d87-e711-80e5-00155db19e6d"
ACC2 = "2e451703-c686-e711-80e5-00155db19e6d"
USER = "75c2dd85-e89e-e711-8122-000d3aa2331c"
FV = "@OData.Community.Display.V1.FormattedValue"
LOGICAL = "@Microsoft.Dynamics.CRM.lookuplogicalname"
NAV = "@Microsoft.Dynamics.CRM.associatednavigationproperty"
#: The deltaLink token exactly as the change tracking article shows it (percent-encoded).
TOKEN1 = "919042%2108%2f22%2f2017%2008%3a10%3a44"
TOKEN2 = "919058%2108%2f22%2f2017%2008%3a21%3a20"


def account(gid: str, name: str, **extra: Any) -> dict[str, Any]:
    """An accounts row with the annotations ``Prefer: odata.include-annotations="*"`` adds
    (Query data: formatted values; lookup properties)."""
    row = {
        "@odata.etag": 'W/"915244"', "accountid": gid, "name": name,
        "accountnumber": None, "address1_country": "US", "address1_stateorprovince": "WA",
        "creditlimit@OData.Community.Display.V1.FormattedValue": "$25,000.50",
        "creditlimit": 25000.5, "creditlimit_base": 25000.5,
        "creditonhold@OData.Community.Display.V1.FormattedValue": "No", "creditonhold": False,
        "emailaddress1": "billing@fourthcoffee.example",
        f"_transactioncurrencyid_value{FV}": "US Dollar",
        f"_transactioncurrencyid_value{NAV}": "transactioncurrencyid",
        f"_transactioncurrencyid_value{LOGICAL}": "transactioncurrency",
        "_transactioncurrencyid_value": USD,
        f"modifiedon{FV}": "3/1/2026 10:00 AM", "modifiedon": "2026-03-01T10:00:00Z",
        "versionnumber": 915244,
    }
    row.update(extra)
    return row


#: Query data / Formatted values: the currencies table.
CURRENCIES = {
    "@odata.context": f"{API}$metadata#transactioncurrencies(transactioncurrencyid,isocurrencycode)",
    "value": [{"@odata.etag": 'W/"1044651"', "transactioncurrencyid": USD,
               "isocurrencycode": "USD"},
              {"@odata.etag": 'W/"1044652"', "transactioncurrencyid": EUR,
               "isocurrencycode": "EUR"}]}


class Env:
    """One environment's answers: msal discovery and token, collection pages per entity set
    (or a queue of bodies for the next GETs), WhoAmI, ``$batch``; every request recorded."""

    def __init__(self) -> None:
        self.sets: dict[str, list[dict[str, Any]]] = {}
        self.queue: list[tuple[int, Any, dict[str, str]]] = []
        self.gets: list[str] = []
        self.prefers: list[str] = []
        self.tokens = 0
        self.batch_answer: Callable[[list[str]], str] | None = None
        self.batches: list[str] = []
        self.rsps: Any = None        # the RequestsMock, set by the fixture
        self.currencies: dict[str, Any] = json.loads(json.dumps(CURRENCIES))

    def register(self, rsps: responses.RequestsMock) -> None:
        rsps.add(responses.GET, f"{AUTHORITY}/v2.0/.well-known/openid-configuration", json={
            "token_endpoint": f"{AUTHORITY}/oauth2/v2.0/token",
            "authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/authorize",
            "issuer": f"{AUTHORITY}/v2.0"})
        rsps.add_callback(responses.POST, f"{AUTHORITY}/oauth2/v2.0/token", self._token)
        rsps.add_callback(responses.POST, f"{API}$batch", self._batch)
        rsps.add_callback(responses.GET, re.compile(re.escape(D365_URL) + r"/api/data/.*"),
                          self._get)

    def _token(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.tokens += 1   # Microsoft identity platform client credentials answer
        return 200, {}, json.dumps({"token_type": "Bearer", "expires_in": 3599,
                                    "ext_expires_in": 3599,
                                    "access_token": f"eyJ0eXAiOiJKV1Qi.{self.tokens}"})

    def _get(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.gets.append(request.url)
        self.prefers.append(request.headers.get("Prefer", ""))
        name = urlsplit(request.url).path.rsplit("/", 1)[-1]
        if self.queue and name not in ("transactioncurrencies", "WhoAmI"):
            status, body, headers = self.queue.pop(0)
            return status, {"OData-Version": "4.0", **headers}, \
                body if isinstance(body, str) else json.dumps(body)
        parts = urlsplit(request.url)
        query = parse_qs(parts.query)
        if name == "WhoAmI":
            return 200, {}, json.dumps(WHOAMI)
        if name == "transactioncurrencies":
            return 200, {}, json.dumps(self.currencies)
        one = re.fullmatch(r"(\w+)\(([0-9a-f-]{36})\)", name)
        if one:
            key = one[1][:-1] + "id"
            rows = [r for r in self.sets.get(one[1], []) if r.get(key) == one[2]]
            if not rows:
                return 404, {}, json.dumps({"error": {
                    "code": "0x80040217",
                    "message": f"{one[1][:-1]} With Id = {one[2]} Does Not Exist"}})
            return 200, {}, json.dumps({"@odata.context": f"{API}$metadata#{one[1]}/$entity",
                                        **rows[0]})
        select_ = query.get("$select", [""])[0]
        context = f"{API}$metadata#{name}({select_})"
        if "$deltatoken" in query:        # nothing changed since
            return 200, {}, json.dumps({"@odata.context": f"{context}/$delta",
                                        "@odata.deltaLink": f"{API}{name}?$select={select_}"
                                                            f"&$deltatoken={TOKEN2}",
                                        "value": []})
        rows = list(self.sets.get(name, []))
        flt = query.get("$filter", [""])[0]
        keys = re.findall(r"(\w+id) eq ([0-9a-f-]{36})", flt)
        if keys:
            rows = [r for r in rows if any(r.get(k) == v for k, v in keys)]
        page: dict[str, Any] = {"@odata.context": context, "value": rows}
        if "odata.track-changes" in request.headers.get("Prefer", ""):
            page["@odata.deltaLink"] = f"{API}{name}?$select={select_}&$deltatoken={TOKEN1}"
        return 200, {"Preference-Applied": "odata.track-changes"}, json.dumps(page)

    def _batch(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        self.batches.append(body)
        urls = re.findall(r"^(?:PATCH|POST) (\S+) HTTP/1.1", body, flags=re.M)
        boundary = "batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139"
        text = self.batch_answer(urls) if self.batch_answer else "".join(
            f"--{boundary}\r\nContent-Type: application/http\r\n"
            f"Content-Transfer-Encoding: binary\r\n\r\nHTTP/1.1 204 No Content\r\n"
            f"OData-Version: 4.0\r\nOData-EntityId: {u}\r\n\r\n\r\n" for u in urls
        ) + f"--{boundary}--\r\n"
        boundary = text.split("\r\n", 1)[0][2:]      # the answer's own boundary
        return 200, {"Content-Type": f"multipart/mixed; boundary={boundary}",
                     "OData-Version": "4.0"}, text


#: WhoAmI function: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/reference/whoami
WHOAMI = {"@odata.context": f"{API}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
          "BusinessUnitId": "e2b9dd85-e89e-e711-8122-000d3aa2331c",
          "UserId": USER.upper(), "OrganizationId": "4ef5b371-e89e-e711-8122-000d3aa2331c"}


@pytest.fixture
def env() -> Iterator[Env]:
    stub = Env()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        stub.register(rsps)
        stub.rsps = rsps
        yield stub


def connector(sleep: Callable[[float], None] | None = None, **over: Any) -> Any:
    return build_connector(d365_settings(**{"page_size": 5000, **over}),
                           sleep=sleep or (lambda s: None), clock=lambda: NOW, environ=ENV)


def same_url(sent: str, given: str) -> bool:
    """The same URL up to the case of its percent-escapes (``%2f`` is ``%2F``)."""
    def norm(url: str) -> str:
        return re.sub(r"%[0-9a-fA-F]{2}", lambda m: m[0].upper(), url)
    return norm(sent) == norm(given)


def records(pages: list[Any]) -> list[dict[str, Any]]:
    return [r for p in pages for r in p.records]


# -- change tracking ------------------------------------------------------------------------
def test_change_tracking_initial_page_then_delta_with_a_deleted_entity(env: Env) -> None:
    """Change tracking: the initial answer carries ``@odata.deltaLink`` (``$deltatoken=
    919042%2108%2f22%2f2017%2008%3a10%3a44``); following it answers
    ``@odata.context: ...$metadata#accounts(...)/$delta`` with the changed rows and
    ``{"@odata.context": "...$metadata#accounts/$deletedEntity", "id", "reason": "deleted"}``.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/use-change-tracking-synchronize-data-external-systems
    """
    select_ = "accountid,name"
    env.queue = [
        (200, {"@odata.context": f"{API}$metadata#accounts({select_})",
               "@odata.deltaLink": f"{API}accounts?$select={select_}&$deltatoken={TOKEN1}",
               "value": [account(ACC1, "Monte Orton")]},
         {"Preference-Applied": "odata.track-changes"}),
        (200, {"@odata.context": f"{D365_URL}/data/v9.2/$metadata#accounts({select_})/$delta",
               "@odata.deltaLink": f"{API}accounts?$select={select_}&$deltatoken={TOKEN2}",
               "value": [account(ACC1, "Monte Orton Ltd", modifiedon="2026-03-01T10:05:00Z"),
                         {"@odata.context": f"{API}$metadata#accounts/$deletedEntity",
                          "id": ACC2, "reason": "deleted"}]}, {})]
    conn = connector()
    first = list(conn.read_changes("account", None))
    assert [r["crm_id"] for r in records(first)] == [ACC1]
    assert "odata.track-changes" in env.prefers[0]
    cursor = first[-1].cursor
    assert decode(cursor)["link"].endswith(f"$deltatoken={TOKEN1}")
    delta = list(conn.read_changes("account", cursor))
    # the delta link is followed as given: the token's percent-encoding neither decoded nor
    # encoded again (urllib3 only upper-cases the escapes, which RFC 3986 makes equivalent)
    assert same_url(env.gets[-1], f"{API}accounts?$select={select_}&$deltatoken={TOKEN1}")
    assert [(r["crm_id"], r["name"]) for r in records(delta)] == [(ACC1, "Monte Orton Ltd")]
    assert [(d.crm_id, d.reason) for p in delta for d in p.deletions] == [(ACC2, "deleted")]
    assert decode(delta[-1].cursor)["link"].endswith(f"$deltatoken={TOKEN2}")


def test_a_delta_with_no_changes_answers_an_empty_json_object(env: Env) -> None:
    """"An empty JSON response is returned if no table changes have occurred": ``{}``, without
    a new delta link; the read keeps the link it has.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/use-change-tracking-synchronize-data-external-systems
    """
    env.sets["accounts"] = [account(ACC1, "Monte Orton")]
    conn = connector()
    cursor = list(conn.read_changes("account", None))[-1].cursor
    env.queue = [(200, {}, {})]
    pages = list(conn.read_changes("account", cursor))
    assert records(pages) == [] and pages[-1].cursor == cursor


# -- query answers: annotations, formats, paging ---------------------------------------------
def test_formatted_values_and_lookup_annotations_leave_the_values_alone(env: Env) -> None:
    """Formatted values and lookup properties: ``creditlimit@OData.Community.Display.V1.
    FormattedValue: "$25,000.50"`` beside ``creditlimit: 25000.5``;
    ``_transactioncurrencyid_value`` with ``@Microsoft.Dynamics.CRM.lookuplogicalname``
    and ``...associatednavigationproperty``; Money as a JSON number; ``modifiedon`` as
    ``2026-03-01T10:00:00Z``.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/query/select-columns
    """
    env.sets["accounts"] = [account(ACC1, "Fourth Coffee (sample)")]
    [record] = records(list(connector().read_changes("account", None)))
    assert record["credit_limit"] == Decimal("25000.5")
    assert isinstance(record["credit_limit"], Decimal)
    assert record["credit_hold"] is False and record["currency"] == "USD"
    assert record["modstamp"] == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert record["_etag"] == 'W/"915244"'
    assert not any("@" in key for key in record)
    rec = mapping.map_account(record, guid=True)
    assert (rec.currency, rec.credit_limit, rec.country) == ("USD", Decimal("25000.5"), "US")


def test_an_integer_of_thousands_of_digits_is_refused_alone_not_the_page(env: Env,
                                                                       engine: Engine) -> None:
    """Python refuses to convert a JSON integer of more than 4,300 digits, which failed the
    whole page on every run; the page now reads and the value is refused by the boundary,
    naming its field."""
    env.sets["accounts"] = [account(ACC1, "Fourth Coffee (sample)"),
                            {**account(ACC2, "Litware"), "creditlimit": "@huge"}]
    page = env._get
    env.rsps.remove(responses.GET, re.compile(re.escape(D365_URL) + r"/api/data/.*"))
    env.rsps.add_callback(responses.GET, re.compile(re.escape(D365_URL) + r"/api/data/.*"),
                          lambda request: (lambda status, headers, text: (
                              status, headers, text.replace('"@huge"', "9" * 5000)))(
                              *page(request)))
    first, second = records(list(connector().read_changes("account", None)))
    assert first["credit_limit"] == Decimal("25000.5")
    assert len(str(second["credit_limit"])) == 5000
    with ledger_uow(engine) as uow:
        applied = apply_page(uow, "c1", "account", [first, second])
        uow.commit()
    assert (applied.upserted, applied.quarantined) == (1, 1)
    with engine.connect() as conn:
        [(crm_id, field)] = conn.execute(select(quarantine.c.crm_id, quarantine.c.field))
    assert (crm_id, field) == (second["crm_id"], "credit_limit")


def test_next_link_with_a_paging_cookie_is_followed_verbatim(env: Env) -> None:
    """Page results: ``@odata.nextLink`` holds ``$skiptoken=%3Ccookie%20pagenumber=%222%22
    %20pagingcookie=%22%253ccookie...%22%20istracking=%22False%22%20/%3E``; it is used as it
    is, never rebuilt.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/query/page-results
    """
    skip = ("%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22%253ccookie%2520page%253d%25221"
            "%2522%253e%253caccountid%2520last%253d%2522%257b60C4E274-0D87-E711-80E5-00155DB19"
            "E6D%257d%2522%2520first%253d%2522%257b60C4E274-0D87-E711-80E5-00155DB19E6D%257d%2522"
            "%2520%252f%253e%253c%252fcookie%253e%22%20istracking=%22False%22%20/%3E")
    next_link = f"{API}accounts?$select=accountid,name&$skiptoken={skip}"
    env.queue = [
        (200, {"@odata.context": f"{API}$metadata#accounts(accountid,name)",
               "value": [account(ACC1, "One")], "@odata.nextLink": next_link}, {}),
        (200, {"@odata.context": f"{API}$metadata#accounts(accountid,name)",
               "value": [account(ACC2, "Two")],
               "@odata.deltaLink": f"{API}accounts?$select=accountid&$deltatoken={TOKEN1}"}, {})]
    pages = list(connector().read_changes("account", None))
    assert [r["crm_id"] for r in records(pages)] == [ACC1, ACC2]
    assert same_url([u for u in env.gets if "/accounts?" in u][-1], next_link)


def test_quote_money_decimal_choice_and_user_local_date_formats(env: Env) -> None:
    """Quote and quote product rows: ``statecode: 2`` with its FormattedValue ``Won``,
    ``totalamount`` Money, ``quantity: 3.0000000000`` (Decimal), ``priceperunit: 12.5000``
    (Money, 4 places), ``effectivefrom`` a "User Local" date-only column served as the UTC
    instant ``2025-12-31T23:00:00Z`` (1 January in Berlin), ``_customerid_value`` with its
    lookup annotations.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/behavior-format-date-time-attribute
    and https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/query/select-columns
    """
    quote = {
        "@odata.etag": 'W/"2202055"', "quoteid": "9a8a7a6a-5a4a-e711-80e5-00155db19e6d",
        "quotenumber": "QUO-01001-B8S2L5", "name": "Gold for Fourth Coffee",
        f"_customerid_value{FV}": "Fourth Coffee (sample)",
        f"_customerid_value{NAV}": "customerid_account",
        f"_customerid_value{LOGICAL}": "account", "_customerid_value": ACC1,
        f"statecode{FV}": "Won", "statecode": 2, "revisionnumber": 0,
        f"totalamount{FV}": "$37.50", "totalamount": 37.5,
        f"effectivefrom{FV}": "1/1/2026", "effectivefrom": "2025-12-31T23:00:00Z",
        "modifiedon": "2026-03-01T10:00:00Z", "versionnumber": 2202055}
    line = {
        "@odata.etag": 'W/"2202060"', "quotedetailid": "1b2c3d4e-5a4a-e711-80e5-00155db19e6d",
        f"_quoteid_value{LOGICAL}": "quote", "_quoteid_value": quote["quoteid"],
        f"_productid_value{LOGICAL}": "product",
        "_productid_value": "5c6d7e8f-5a4a-e711-80e5-00155db19e6d",
        "quantity": 3.0000000000, f"priceperunit{FV}": "$12.50", "priceperunit": 12.5000,
        "requestdeliveryby": None, "modifiedon": "2026-03-01T10:00:00Z",
        "versionnumber": 2202060}
    env.sets["quotes"], env.sets["quotedetails"] = [quote], [line]
    conn = connector(time_zone="Europe/Berlin")
    [q] = records(list(conn.read_changes("quote", None)))
    [ql] = records(list(conn.read_changes("quote_line", None)))
    assert (q["status"], q["revision"], q["start_date"]) == ("Won", 0, date(2026, 1, 1))
    assert q["account_crm_id"] == ACC1
    assert ql["quantity"] == Decimal("3") and ql["unit_price"] == Decimal("12.5")
    rq, rl = mapping.map_quote(q, guid=True), mapping.map_quote_line(ql, guid=True)
    assert rq.start_date == date(2026, 1, 1) and rl.unit_price == Decimal("12.5")


# -- errors, throttling, auth ----------------------------------------------------------------
def test_odata_error_body_is_fatal_with_its_hex_code(env: Env) -> None:
    """Web API errors: ``{"error": {"code": "0x80060888", "message": "..."}}`` with 400: not
    retried, the code kept.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/compose-http-requests-handle-errors
    """
    sleeps = Sleeper()
    env.queue = [(400, {"error": {"code": "0x80060888", "message": "Could not find a property "
                                  "named 'creditlimt' on type 'Microsoft.Dynamics.CRM.account'."}},
                  {"Content-Type": "application/json; odata.metadata=minimal"})]
    with pytest.raises(FatalError) as info:
        list(connector(sleeps).read_changes("account", None))
    assert info.value.code == "0x80060888" and sleeps.calls == []


def test_a_missing_row_answers_404_does_not_exist(env: Env) -> None:
    """Retrieve a missing row: 404 ``{"error": {"code": "0x80040217", "message": "account With
    Id = ... Does Not Exist"}}``: the record is not there (None), not an error.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/retrieve-entity-using-web-api
    """
    assert connector().read_one("account", ACC2) is None


@pytest.mark.parametrize(("code", "message"), [
    ("0x80072322", "Number of requests exceeded the limit of 6000 over time window of 300 "
                   "seconds."),
    ("0x80072321", "Combined execution time of incoming requests exceeded limit of 1,200,000 "
                   " milliseconds over time window of 300 seconds. Decrease number of "
                   "concurrent requests or reduce the duration of requests and try again later."),
    ("0x80072326", "Number of concurrent requests exceeded the limit of 52."),
])
def test_429_of_each_service_protection_limit_waits_retry_after(env: Env, code: str,
                                                                message: str) -> None:
    """Service protection API limits: 429 with ``Retry-After`` (seconds) and one of three
    error codes; wait exactly that long, then send again. ``x-ms-ratelimit-*`` headers are
    kept for diagnosis.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/api-limits
    """
    sleeps = Sleeper()
    env.sets["accounts"] = [account(ACC1, "One")]
    env.queue = [(429, {"error": {"code": code, "message": message}},
                  {"Retry-After": "7", "x-ms-ratelimit-burst-remaining-xrm-requests": "0",
                   "x-ms-ratelimit-time-remaining-xrm-requests": "1,200.00"})]
    conn = connector(sleeps)
    assert conn.read_one("account", ACC1)["name"] == "One"
    assert sleeps.calls == [7.0]
    assert conn.api_budget().details["x-ms-ratelimit-burst-remaining-xrm-requests"] == "0"


def test_429_whose_retry_after_passes_the_bound_gives_up_without_sending_again(env: Env) -> None:
    """A ``Retry-After`` longer than the connection's ``max_retry_seconds`` is never cut short:
    the call gives up at once (the run fails and is retried later), it never sends early.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/api-limits
    """
    sleeps = Sleeper()
    env.queue = [(429, {"error": {"code": "0x80072321", "message": "Combined execution time"}},
                  {"Retry-After": "300"})]
    with pytest.raises(RetriableError):
        connector(sleeps).read_one("account", ACC1)
    assert sleeps.calls == [] and len(env.gets) == 1


def test_401_with_an_empty_body_gets_a_new_token_once(env: Env) -> None:
    """An expired token: 401 with no body and ``WWW-Authenticate: Bearer authorization_uri=
    ...``; msal is asked for a new token and the call made once more.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/authenticate-oauth
    """
    env.sets["accounts"] = [account(ACC1, "One")]
    env.queue = [(401, "", {"WWW-Authenticate": 'Bearer authorization_uri="https://login.'
                            'microsoftonline.com/tenant1/oauth2/authorize", resource_id='
                            f'"{D365_URL}/"'})]
    assert connector().read_one("account", ACC1)["name"] == "One"
    assert env.tokens == 2


def test_whoami_names_the_systemuser_our_writes_are_stamped_with(env: Env) -> None:
    """``GET WhoAmI``: ``{"@odata.context": ...WhoAmIResponse, "BusinessUnitId", "UserId",
    "OrganizationId"}``.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/reference/whoami
    """
    assert connector().whoami() == USER


# -- $batch and upserts -----------------------------------------------------------------------
def _doc_batch(urls: list[str]) -> str:
    """The continue-on-error answer of "Execute batch operations": the first request failed
    with 400 and ``{"error": ...}`` right before the next boundary, the others 204 with
    ``OData-EntityId``."""
    b = "batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139"
    out = (f"--{b}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
           "\r\nHTTP/1.1 400 Bad Request\r\nREQ_ID: de4c5227-4a28-4ebd-8ced-3392ece1697b\r\n"
           "Content-Type: application/json; odata.metadata=minimal\r\nOData-Version: 4.0\r\n\r\n"
           '{"error":{"code":"0x80044331","message":"A validation error occurred.  The length '
           "of the 'new_billingholdreasons' attribute of the 'account' entity exceeded the "
           "maximum allowed length of '200'.\"}}\r\n")
    for url in urls[1:]:
        out += (f"--{b}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary"
                f"\r\n\r\nHTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\nLocation: {url}\r\n"
                f"OData-EntityId: {url}\r\n\r\n\r\n")
    return out + f"--{b}--\r\n"


def test_batch_continue_on_error_answer_maps_each_request(env: Env) -> None:
    """``$batch`` with ``Prefer: odata.continue-on-error``: 200, one ``application/http`` part
    per request in order; a failed one ``HTTP/1.1 400 Bad Request`` with its error, the
    others ``HTTP/1.1 204 No Content`` with ``OData-EntityId``.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api
    """
    env.batch_answer = _doc_batch
    results = connector().write("account", [
        {"crm_id": ACC1, "billing_hold_reasons": "x" * 300},
        {"crm_id": ACC2, "billing_hold": True, "open_balance": Decimal("12.34")}])
    batch = [c.request for c in env.rsps.calls if c.request.url.endswith("$batch")]
    assert batch[-1].headers["Prefer"] == "odata.continue-on-error"
    bad, ok = results
    assert (bad.ok, bad.code) == (False, "0x80044331") and "exceeded" in (bad.message or "")
    assert ok.ok and ok.crm_id == ACC2
    assert f"PATCH {API}accounts({ACC2}) HTTP/1.1" in env.batches[0]
    assert '"new_openbalance": 12.34' in env.batches[0]


def test_batch_answer_with_a_change_set_is_flattened(env: Env) -> None:
    """A ``$batch`` answer whose part is a change set (``multipart/mixed; boundary=
    changesetresponse_...``, parts with ``Content-ID``, ``Location:`` without a space).
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api
    """
    def answer(urls: list[str]) -> str:
        b, c = ("batchresponse_3cace264-86ea-40fe-83d3-954b336c0f4a",
                "changesetresponse_1a5db8a1-ec98-42c4-81f6-6bc6adcfa4bc")
        parts = "".join(
            f"--{c}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {n}\r\n\r\nHTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\n"
            f"Location:{u}\r\nOData-EntityId:{u}\r\n\r\n" for n, u in enumerate(urls, 1))
        return (f"--{b}\r\nContent-Type: multipart/mixed; boundary={c}\r\n\r\n{parts}"
                f"--{c}--\r\n--{b}--\r\n")

    env.batch_answer = answer
    results = connector().write("account", [{"crm_id": ACC1, "billing_hold": True},
                                            {"crm_id": ACC2, "billing_hold": False}])
    assert [r.ok for r in results] == [True, True]


def test_412_version_mismatch_in_a_batch_is_a_conflict(env: Env) -> None:
    """Optimistic concurrency: a PATCH with ``If-Match: W/"..."`` on a changed row answers
    412 ``{"error": {"code": "0x80060882", "message": "The version of the existing record
    doesn't match the RowVersion property provided."}}``.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/perform-conditional-operations-using-web-api
    """
    def answer(urls: list[str]) -> str:
        b = "batchresponse_156da4b8-cd2c-4862-a911-4aaab97c001a"
        return (f"--{b}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary"
                "\r\n\r\nHTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json; "
                "odata.metadata=minimal\r\nOData-Version: 4.0\r\n\r\n"
                '{"error":{"code":"0x80060882","message":"The version of the existing record '
                "doesn't match the RowVersion property provided.\"}}\r\n--" + b + "--\r\n")

    env.batch_answer = answer
    [result] = connector().write("account", [{"crm_id": ACC1, "credit_hold": True,
                                              "_etag": 'W/"915244"'}])
    assert (result.ok, result.code) == (False, "CONFLICT")
    assert 'If-Match: W/"915244"' in env.batches[0]


def test_note_create_answers_204_with_odata_entityid(env: Env) -> None:
    """Create a row: ``204 No Content`` with ``OData-EntityId: [Organization URI]/api/data/
    v9.2/annotations(7eb682f1-ca75-e511-80d4-00155d2a68d1)``; the id is taken from it.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/create-entity-web-api
    """
    env.sets["new_invoices"] = [{"new_invoiceid": "0b1c2d3e-ca75-e511-80d4-00155d2a68d1",
                                 "new_ledgerdocumentid": "invoice-42"}]
    env.queue = [(200, {"@odata.context": f"{API}$metadata#new_invoices(new_invoiceid)/$entity",
                        "@odata.etag": 'W/"1"',
                        "new_invoiceid": "0b1c2d3e-ca75-e511-80d4-00155d2a68d1"}, {}),
                 (200, {"@odata.context": f"{API}$metadata#annotations(annotationid)",
                        "value": []}, {})]
    note = "7eb682f1-ca75-e511-80d4-00155d2a68d1"
    env.rsps.add(responses.POST, f"{API}annotations", status=204,
                 headers={"OData-Version": "4.0",
                          "OData-EntityId": f"{API}annotations({note})"})
    [result] = connector(push_documents=True).write("document_file", [
        {"crm_id": "invoice-42", "title": "INV-000042", "_pdf": b"%PDF-1.7"}])
    assert result.ok and result.crm_id == note


# -- webhooks -------------------------------------------------------------------------------
def _webhook(entity: str, gid: str) -> dict[str, Any]:
    """The ``RemoteExecutionContext`` of "Use WebHooks" (Update, PostOperation, asynchronous),
    the table and id made ours."""
    target = {"__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
              "Attributes": [{"key": "name", "value": "Fourth Coffee"},
                             {"key": f"{entity}id", "value": gid},
                             {"key": "modifiedon", "value": "/Date(1506384247000)/"},
                             {"key": "modifiedby", "value": {
                                 "__type": "EntityReference:http://schemas.microsoft.com/xrm/"
                                           "2011/Contracts",
                                 "Id": USER, "KeyAttributes": [], "LogicalName": "systemuser",
                                 "Name": None, "RowVersion": None}},
                             {"key": "modifiedonbehalfby", "value": None}],
              "EntityState": None, "FormattedValues": [], "Id": gid, "KeyAttributes": [],
              "LogicalName": entity, "RelatedEntities": [], "RowVersion": None}
    return {
        "BusinessUnitId": "e2b9dd85-e89e-e711-8122-000d3aa2331c",
        "CorrelationId": "b374239d-4233-41a9-8b17-a86cb4f737b5", "Depth": 1,
        "InitiatingUserId": "aaa2dd85-e89e-e711-8122-000d3aa2331c",
        "InputParameters": [{"key": "Target", "value": target}],
        "IsExecutingOffline": False, "IsInTransaction": False, "IsOfflinePlayback": False,
        "IsolationMode": 1, "MessageName": "Update", "Mode": 1,
        "OperationCreatedOn": "/Date(1506409448000-0700)/",
        "OperationId": "4af10637-4ea2-e711-8122-000d3aa2331c",
        "OrganizationId": "4ef5b371-e89e-e711-8122-000d3aa2331c", "OrganizationName": "OrgName",
        "OutputParameters": [],
        "OwningExtension": {"Id": "75417616-4ea2-e711-8122-000d3aa2331c", "KeyAttributes": [],
                            "LogicalName": "sdkmessageprocessingstep", "Name": None,
                            "RowVersion": None},
        "ParentContext": {"BusinessUnitId": "e2b9dd85-e89e-e711-8122-000d3aa2331c",
                          "CorrelationId": "b374239d-4233-41a9-8b17-a86cb4f737b5", "Depth": 1,
                          "InputParameters": [{"key": "Target", "value": target},
                                              {"key": "SuppressDuplicateDetection",
                                               "value": False}],
                          "MessageName": "Update", "Mode": 1, "ParentContext": None,
                          "PrimaryEntityId": gid, "PrimaryEntityName": entity,
                          "RequestId": None, "Stage": 30, "UserId": USER},
        "PostEntityImages": [{"key": "AsynchronousStepPrimaryName", "value": {
            "Attributes": [{"key": "name", "value": "Fourth Coffee"},
                           {"key": f"{entity}id", "value": gid}],
            "EntityState": None, "FormattedValues": [], "Id": gid, "KeyAttributes": [],
            "LogicalName": entity, "RelatedEntities": [], "RowVersion": None}}],
        "PreEntityImages": [], "PrimaryEntityId": gid, "PrimaryEntityName": entity,
        "RequestId": None, "SecondaryEntityName": "none", "SharedVariables": [], "Stage": 40,
        "UserId": USER,
    }


def _client(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    return TestClient(build_app(engine, events_settings(tmp_path, monkeypatch)))


def _inbox(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(
            event_inbox.c.event_id, event_inbox.c.object, event_inbox.c.crm_id,
            event_inbox.c.action).order_by(event_inbox.c.id))]


def test_webhook_remote_execution_context_of_the_docs_is_stored_once(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A webhook step posts the ``RemoteExecutionContext`` JSON (``\\/Date(...)\\/`` times,
    ``ParentContext``, ``SharedVariables``, ``PostEntityImages``) with ``x-request-id``,
    ``x-ms-dynamics-*`` and ``x-ms-correlation-request-id`` headers; it is stored once per
    ``OperationId``.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/use-webhooks
    """
    client = _client(engine, tmp_path, monkeypatch)
    raw = json.dumps(_webhook("account", ACC1)).replace("/", "\\/").encode()
    headers = {"Content-Type": "application/json", "x-request-id": str(uuid.uuid4()),
               "x-ms-dynamics-organization": "acme.crm.dynamics.com",
               "x-ms-dynamics-entity-name": "account", "x-ms-dynamics-request-name": "Update",
               "x-ms-correlation-request-id": "b374239d-4233-41a9-8b17-a86cb4f737b5"}
    for _ in range(2):
        answer = client.post(f"/events/dataverse/dv?code={DV_KEY}", content=raw,
                             headers=headers)
        assert answer.status_code == 200
    assert _inbox(engine) == [("4af10637-4ea2-e711-8122-000d3aa2331c", "account", ACC1,
                               "Update")]


def test_webhook_over_256_kb_trimmed_of_its_parameters_is_still_stored(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over 256 KB the platform sends ``x-ms-dynamics-msg-size-exceeded`` and drops
    ``ParentContext``, ``InputParameters``, ``PreEntityImages`` and ``PostEntityImages``.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/use-webhooks
    """
    client = _client(engine, tmp_path, monkeypatch)
    ctx = _webhook("quote", "9a8a7a6a-5a4a-e711-80e5-00155db19e6d")
    for key in ("ParentContext", "InputParameters", "PreEntityImages", "PostEntityImages"):
        ctx.pop(key)
    answer = client.post(f"/events/dataverse/dv?code={DV_KEY}", content=json.dumps(ctx),
                         headers={"x-ms-dynamics-msg-size-exceeded": "true"})
    assert answer.status_code == 200
    assert _inbox(engine) == [("4af10637-4ea2-e711-8122-000d3aa2331c", "quote",
                               "9a8a7a6a-5a4a-e711-80e5-00155db19e6d", "Update")]


# -- the whole cycle on documented answers ----------------------------------------------------
QUOTE_ID = "9a8a7a6a-5a4a-e711-80e5-00155db19e6d"
LINE2 = "2b2c3d4e-5a4a-e711-80e5-00155db19e6d"
PRODUCT_ID = "5c6d7e8f-5a4a-e711-80e5-00155db19e6d"


def _catalog(env: Env, *, customer: str = ACC1, customer_table: str = "account") -> None:
    env.sets["products"] = [{
        "@odata.etag": 'W/"2201001"', "productid": PRODUCT_ID, "productnumber": "SKU-GOLD",
        "name": "Gold plan", f"statecode{FV}": "Active", "statecode": 0,
        f"new_billingtype{FV}": "Recurring", "new_billingtype": 100000000,
        "new_billingfrequency": 100000001, "new_needsprovisioning": False,
        f"price{FV}": "$12.50", "price": 12.5,
        f"_transactioncurrencyid_value{LOGICAL}": "transactioncurrency",
        "_transactioncurrencyid_value": USD, "modifiedon": "2026-03-01T10:00:00Z",
        "versionnumber": 2201001}]
    env.sets["quotes"] = [{
        "@odata.etag": 'W/"2202055"', "quoteid": QUOTE_ID, "quotenumber": "QUO-01001-B8S2L5",
        "name": "Gold", f"_customerid_value{LOGICAL}": customer_table,
        f"_customerid_value{NAV}": f"customerid_{customer_table}",
        "_customerid_value": customer, f"statecode{FV}": "Won", "statecode": 2,
        "revisionnumber": 0, "effectivefrom": "2026-03-01T00:00:00Z",
        "modifiedon": "2026-03-01T10:00:00Z", "versionnumber": 2202055}]
    env.sets["quotedetails"] = [{
        "@odata.etag": 'W/"2202060"', "quotedetailid": "1b2c3d4e-5a4a-e711-80e5-00155db19e6d",
        "_quoteid_value": QUOTE_ID, "_productid_value": PRODUCT_ID,
        "quantity": 3.0000000000, "priceperunit": 12.5000, "requestdeliveryby": None,
        "modifiedon": "2026-03-01T10:00:00Z", "versionnumber": 2202060}]
    env.sets["accounts"] = [account(ACC1, "Fourth Coffee (sample)")]


def test_a_cycle_on_documented_answers_orders_the_won_quote(env: Env, engine: Engine) -> None:
    """Every table read in the documented collection shape (``@odata.context``, rows with
    ``@odata.etag`` and annotations, change-tracked tables answering a delta link, the
    others read by ``modifiedon``); the won quote becomes an order and the push goes out as a
    ``$batch``.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/query-data-web-api
    """
    _catalog(env)
    report = run_cycle(engine, connector())
    assert report.outcome == "ok", report.error
    assert report.handed_off == 1
    with engine.connect() as conn:
        acc = conn.execute(select(accounts.c.ext_id, accounts.c.credit_limit_minor)).one()
        assert conn.execute(select(orders.c.source_ref)).scalar_one() == \
            f"d365_test:{QUOTE_ID}:rev0"
        assert conn.execute(select(quarantine)).all() == []
    assert tuple(acc) == (ACC1, 2500050)
    assert any(f"PATCH {API}quotes({QUOTE_ID}) HTTP/1.1" in b for b in env.batches)


def test_an_account_whose_country_is_a_name_is_quarantined_naming_country(
        env: Env, engine: Engine) -> None:
    """``address1_country`` is free text in Dataverse (the docs' sample accounts hold country
    names, e.g. ``"U.S."``); the boundary wants ISO 3166 alpha-2 and quarantines the account
    naming ``country`` (the rest lands): a real org must map a column holding codes.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/reference/entities/account
    """
    _catalog(env)
    env.sets["accounts"] = [account(ACC1, "One", address1_country="U.S."),
                            account(ACC2, "Two", address1_country="DE")]
    run_cycle(engine, connector(), SyncOptions(objects=("account",)))
    with engine.connect() as conn:
        bad = [tuple(r) for r in conn.execute(select(quarantine.c.crm_id, quarantine.c.field))]
        landed = conn.execute(select(accounts.c.ext_id)).scalars().all()
    assert bad == [(ACC1, "country")] and landed == [ACC2]


def test_a_quote_whose_customer_is_a_contact_is_quarantined_naming_the_account(
        env: Env, engine: Engine) -> None:
    """``quote.customerid`` is a Customer lookup: ``_customerid_value`` with
    ``@Microsoft.Dynamics.CRM.lookuplogicalname: "contact"`` names a contact, not an account.
    The connector does not read that annotation; the quote names no account billing can find
    and is quarantined naming ``account_crm_id`` (unknown account), not ordered.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/webapi/query/select-columns
    (lookup property annotations) and
    https://learn.microsoft.com/en-us/dynamics365/developer/reference/entities/quote (customerid)
    """
    contact = "4f5195a4-7a75-e911-a97a-000d3a34a1bd"
    _catalog(env, customer=contact, customer_table="contact")
    run_cycle(engine, connector())
    with engine.connect() as conn:
        bad = [tuple(r) for r in conn.execute(select(quarantine.c.crm_id, quarantine.c.field))]
        waiting = conn.execute(select(handoffs.c.state)).scalars().all()
    assert (QUOTE_ID, "account_crm_id") in bad, (bad, waiting)
    with engine.connect() as conn:
        assert conn.execute(select(orders)).all() == []


def test_a_won_quote_with_a_write_in_product_line_is_not_ordered_without_it(
        env: Env, engine: Engine) -> None:
    """A quote product may be a write-in: ``isproductoverridden: true``,
    ``productdescription`` set, ``_productid_value: null``. Billing cannot bill a line
    without a catalog product; the quote must not become an order that silently leaves the
    line out.
    Docs: https://learn.microsoft.com/en-us/dynamics365/developer/reference/entities/quotedetail
    (isproductoverridden, productdescription, productid)
    """
    _catalog(env)
    env.sets["quotedetails"].append({
        "@odata.etag": 'W/"2202061"', "quotedetailid": LINE2,
        "_quoteid_value": QUOTE_ID, "_productid_value": None, "isproductoverridden": True,
        "productdescription": "Onboarding workshop (write-in)",
        "quantity": 1.0000000000, "priceperunit": 500.0000, "requestdeliveryby": None,
        "modifiedon": "2026-03-01T10:00:00Z", "versionnumber": 2202061})
    run_cycle(engine, connector())
    with engine.connect() as conn:
        bad = [tuple(r) for r in conn.execute(select(quarantine.c.crm_id, quarantine.c.field))]
        ordered = conn.execute(select(orders)).all()
        states = conn.execute(select(handoffs.c.state, handoffs.c.detail)).all()
    assert (LINE2, "product_crm_id") in bad
    assert (QUOTE_ID, "lines") in bad
    assert ordered == [], (states, bad)
    assert [s for s, _ in states] == ["waiting"]
    assert "2b2c3d4e-5a4a-e711-80e5-00155db19e6d" in states[0][1]
    assert "product_crm_id" in states[0][1]


def test_a_discounted_quote_product_is_billed_at_its_discounted_amount(
        env: Env, engine: Engine) -> None:
    """A quote product's amount is ``baseamount`` (``priceperunit`` x ``quantity``) less
    ``manualdiscountamount`` and ``volumediscountamount`` (plus ``tax``): ``extendedamount``.
    Docs: https://learn.microsoft.com/en-us/dynamics365/developer/reference/entities/quotedetail
    (baseamount, manualdiscountamount, volumediscountamount, extendedamount)
    """
    _catalog(env)
    env.sets["quotedetails"][0].update({
        "baseamount@OData.Community.Display.V1.FormattedValue": "$37.50", "baseamount": 37.5,
        "manualdiscountamount@OData.Community.Display.V1.FormattedValue": "$7.50",
        "manualdiscountamount": 7.5, "volumediscountamount": 0.0, "tax": None,
        "extendedamount@OData.Community.Display.V1.FormattedValue": "$30.00",
        "extendedamount": 30.0})
    report = run_cycle(engine, connector())
    assert report.handed_off == 1
    with engine.connect() as conn:
        sub = conn.execute(select(subscriptions.c.quantity, subscriptions.c.unit_price)).one()
    assert sub.quantity * (sub.unit_price or Decimal(0)) == Decimal("30.00")


def test_webhook_of_a_quote_product_names_the_quote_line(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step on ``quotedetail`` posts ``PrimaryEntityName: "quotedetail"`` (the table's logical
    name); it is stored for the field map's ``quote_line``; a table the map does not read
    (the docs' own sample is a ``contact``) is acknowledged and not stored.
    Docs: https://learn.microsoft.com/en-us/power-apps/developer/data-platform/use-webhooks
    """
    client = _client(engine, tmp_path, monkeypatch)
    line = "1b2c3d4e-5a4a-e711-80e5-00155db19e6d"
    ctx = {**_webhook("quotedetail", line), "OperationId": str(uuid.uuid4())}
    contact = {**_webhook("contact", "6d81597f-0f9f-e711-8122-000d3aa2331c"),
               "OperationId": str(uuid.uuid4())}
    for body in (ctx, contact):
        assert client.post(f"/events/dataverse/dv?code={DV_KEY}",
                           content=json.dumps(body)).status_code == 200
    assert [(o, c) for _, o, c, _ in _inbox(engine)] == [("quote_line", line)]


def test_a_quote_level_discount_is_billed(env: Env, engine: Engine) -> None:
    """A quote may carry a discount of its own, ``discountpercentage`` or ``discountamount``,
    applied to the sum of its lines (``totallineitemamount``) to give ``totalamount``.
    Docs: https://learn.microsoft.com/en-us/dynamics365/developer/reference/entities/quote
    (discountpercentage, discountamount, totalamount)
    """
    _catalog(env)
    env.sets["quotes"][0].update({
        "totallineitemamount": 37.5, "discountpercentage": 10.0, "discountamount": 0.0,
        f"totalamount{FV}": "$33.75", "totalamount": 33.75})
    run_cycle(engine, connector())
    with engine.connect() as conn:
        subs = conn.execute(select(subscriptions.c.quantity, subscriptions.c.unit_price)).all()
    assert sum(q * (p or Decimal(0)) for q, p in subs) == Decimal("33.75")


def test_a_quote_in_another_currency_than_its_account_is_not_billed_in_the_account_currency(
        env: Env, engine: Engine) -> None:
    """A quote has its own currency (``_transactioncurrencyid_value``, from its price list),
    which need not be the customer account's.
    Docs: https://learn.microsoft.com/en-us/dynamics365/developer/reference/entities/quote
    (transactioncurrencyid)
    """
    _catalog(env)
    env.sets["quotes"][0].update({f"_transactioncurrencyid_value{FV}": "Euro",
                                  f"_transactioncurrencyid_value{LOGICAL}": "transactioncurrency",
                                  "_transactioncurrencyid_value": EUR})
    env.sets["quotedetails"][0]["_transactioncurrencyid_value"] = EUR
    run_cycle(engine, connector())
    with engine.connect() as conn:
        prices = conn.execute(select(subscriptions.c.unit_price)).scalars().all()
        bad = [tuple(r) for r in conn.execute(select(quarantine.c.crm_id, quarantine.c.field,
                                                      quarantine.c.value))]
    assert prices == [], "an EUR price was ordered as USD"
    assert (QUOTE_ID, "currency", "EUR") in bad


def test_a_discount_amount_on_the_whole_quote_is_refused_naming_it(
        env: Env, engine: Engine) -> None:
    """``discountamount`` on the quote (5.00 off a 37.50 quote): no one line carries it, so
    the quote is refused naming ``discount_amount`` and nothing is ordered.
    Docs: https://learn.microsoft.com/en-us/dynamics365/developer/reference/entities/quote
    (discountamount)
    """
    _catalog(env)
    env.sets["quotes"][0].update({"discountamount": 5.0, "discountpercentage": None})
    run_cycle(engine, connector())
    with engine.connect() as conn:
        assert conn.execute(select(orders)).all() == []
        bad = [tuple(r) for r in conn.execute(select(quarantine.c.crm_id, quarantine.c.field))]
    assert (QUOTE_ID, "discount_amount") in bad


def test_freight_on_the_whole_quote_is_refused_naming_it(env: Env, engine: Engine) -> None:
    """``freightamount`` is a charge on the whole quote, added to its total (``totalamount`` =
    lines less the quote discount plus freight and tax). No line carries it: before, the quote
    was ordered and billed without it (25.00 of freight never invoiced). Now it is refused
    naming ``freight_amount``; with freight 0 it is ordered.
    Docs: https://learn.microsoft.com/en-us/dynamics365/developer/reference/entities/quote
    (freightamount, totalamount)
    """
    _catalog(env)
    env.sets["quotes"][0].update({"freightamount": 25.0, f"totalamount{FV}": "$62.50",
                                  "totalamount": 62.5})
    run_cycle(engine, connector())
    with engine.connect() as conn:
        assert conn.execute(select(orders)).all() == []
        bad = [tuple(r) for r in conn.execute(select(quarantine.c.crm_id, quarantine.c.field,
                                                      quarantine.c.value))]
    assert (QUOTE_ID, "freight_amount", "25.0") in bad or (QUOTE_ID, "freight_amount", "25") in bad


def test_a_quote_without_freight_is_ordered(env: Env, engine: Engine) -> None:
    _catalog(env)
    env.sets["quotes"][0].update({"freightamount": 0.0})
    assert run_cycle(engine, connector()).handed_off == 1


def test_a_volume_discount_per_unit_is_billed(env: Env, engine: Engine) -> None:
    """``volumediscountamount`` is a discount per unit (2.50 off 12.50, quantity 3): the line is
    billed 3 x 10.00 = 30.00.
    Docs: https://learn.microsoft.com/en-us/dynamics365/developer/reference/entities/quotedetail
    (volumediscountamount)
    """
    _catalog(env)
    env.sets["quotedetails"][0].update({"volumediscountamount": 2.5,
                                        "manualdiscountamount": None})
    run_cycle(engine, connector())
    with engine.connect() as conn:
        sub = conn.execute(select(subscriptions.c.quantity, subscriptions.c.unit_price)).one()
    assert sub.quantity * sub.unit_price == Decimal("30.00")


def test_an_entra_token_error_is_an_auth_error_with_its_code_asked_once(env: Env) -> None:
    """Microsoft identity platform client credentials error: 401 ``{"error":
    "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.
    ...", "error_codes": [7000215], "timestamp", "trace_id", "correlation_id", "error_uri"}``.
    Docs: https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#error-response
    """
    env.rsps.remove(responses.POST, f"{AUTHORITY}/oauth2/v2.0/token")
    env.rsps.add(responses.POST, f"{AUTHORITY}/oauth2/v2.0/token", status=401, json={
        "error": "invalid_client",
        "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret "
                             "being sent in the request is the client secret value, not the "
                             "client secret ID.\r\nTrace ID: 0000aaaa-11bb-cccc-dd22-eeeeee333333"
                             "\r\nCorrelation ID: aaaa0000-bb11-2222-33cc-444444dddddd\r\n"
                             "Timestamp: 2026-03-01 10:00:00Z",
        "error_codes": [7000215], "timestamp": "2026-03-01 10:00:00Z",
        "trace_id": "0000aaaa-11bb-cccc-dd22-eeeeee333333",
        "correlation_id": "aaaa0000-bb11-2222-33cc-444444dddddd",
        "error_uri": "https://login.microsoftonline.com/error?code=7000215"})
    with pytest.raises(AuthError) as info:
        connector().read_one("account", ACC1)
    assert info.value.code == "invalid_client"
    assert "AADSTS7000215" in str(info.value)
    assert [c.request.url for c in env.rsps.calls].count(
        f"{AUTHORITY}/oauth2/v2.0/token") == 1
    assert not any("/api/data/" in c.request.url for c in env.rsps.calls)


def test_a_guid_in_capitals_names_the_same_row_never_a_second_one(env: Env,
                                                                  engine: Engine) -> None:
    """Dataverse GUIDs compare without case (the webhook receiver already reads
    ``PrimaryEntityId`` in lower case). A quote product naming its quote in capitals was left
    out of the quote's order (ordered short: 3 x 12.50 without the 500.00 line); an account
    and a quote product served once more in capitals became a second account and a second
    line billed beside the first. Each is now the one row it names."""
    _catalog(env)
    line = env.sets["quotedetails"][0]
    env.sets["quotedetails"] += [
        {**line, "quotedetailid": LINE2, "_quoteid_value": QUOTE_ID.upper(),
         "quantity": 1.0, "priceperunit": 500.0},
        {**line, "quotedetailid": line["quotedetailid"].upper(), "quantity": 4.0}]
    env.sets["accounts"].append(account(ACC1.upper(), "Fourth Coffee (sample)"))
    report = run_cycle(engine, connector())
    assert report.outcome == "ok", report.error
    with engine.connect() as conn:
        assert conn.execute(select(accounts.c.ext_id)).scalars().all() == [ACC1]
        items = conn.execute(select(subscriptions.c.quantity, subscriptions.c.unit_price)
                             .order_by(subscriptions.c.unit_price)).all()
        assert conn.execute(select(quarantine)).all() == []
    assert [tuple(i) for i in items] == [(Decimal(4), Decimal("12.5")),
                                         (Decimal(1), Decimal(500))]


def test_a_deleted_entity_id_in_capitals_deletes_the_row(env: Env) -> None:
    """A ``$deletedEntity`` row's ``id`` names the row whatever its case."""
    env.sets["accounts"] = [account(ACC1, "One"), account(ACC2, "Two")]
    conn = connector()
    cursor = list(conn.read_changes("account", None))[-1].cursor
    env.queue = [(200, {"@odata.context": f"{API}$metadata#accounts(accountid)/$delta",
                        "@odata.deltaLink": f"{API}accounts?$deltatoken={TOKEN2}",
                        "value": [{"@odata.context": f"{API}$metadata#accounts/$deletedEntity",
                                   "id": ACC2.upper(), "reason": "deleted"}]}, {})]
    pages = list(conn.read_changes("account", cursor))
    assert [d.crm_id for p in pages for d in p.deletions] == [ACC2]


def test_a_currency_added_after_the_first_read_is_known_to_the_running_connector(
        env: Env, engine: Engine) -> None:
    """The daemon keeps its connector: the ``transactioncurrencies`` table read once stayed as
    it was, so every account of a currency activated later was quarantined as ``currency:
    <the currency's GUID> is not a known ISO 4217 currency`` until a restart, the account's
    quotes waiting with it. A currency id the cache does not know reads the table again (once
    per id: an id it still does not know is not asked for again)."""
    env.sets["accounts"] = [account(ACC1, "One")]
    conn = connector()
    run_cycle(engine, conn, SyncOptions(objects=("account",)))
    gbp = "8ae3c4a9-2f7e-e711-80f0-00155db19e6d"
    env.currencies["value"].append({"@odata.etag": 'W/"1044653"',
                                    "transactioncurrencyid": gbp, "isocurrencycode": "GBP"})
    env.queue = [(200, {"@odata.context": f"{API}$metadata#accounts/$delta",
                        "@odata.deltaLink": f"{API}accounts?$deltatoken={TOKEN2}",
                        "value": [account(ACC2, "Two", _transactioncurrencyid_value=gbp,
                                          modifiedon="2026-03-02T10:00:00Z")]}, {})]
    run_cycle(engine, conn, SyncOptions(objects=("account",)))
    with engine.connect() as db:
        assert db.execute(select(quarantine.c.crm_id, quarantine.c.field)).all() == []
        landed = db.execute(select(accounts.c.ext_id, accounts.c.currency)
                            .order_by(accounts.c.id)).all()
    assert [tuple(r) for r in landed] == [(ACC1, "USD"), (ACC2, "GBP")]
    unknown = "9bf4d5ba-2f7e-e711-80f0-00155db19e6d"
    reads = sum("transactioncurrencies" in u for u in env.gets)
    for _ in range(2):
        assert conn._currency(unknown) == unknown
    assert sum("transactioncurrencies" in u for u in env.gets) == reads + 1


@pytest.mark.parametrize("read", ["read_by_ids", "lookup_in"])
def test_a_filtered_read_handed_the_same_next_link_again_stops(env: Env, read: str) -> None:
    """The reads by id and by field (the targeted resync of events and of an accepted quote's
    lines) followed ``@odata.nextLink`` without the repeated-link check the change reads
    have: a server handing the same link again read the page over and over (here 4 times,
    each row returned 4 times; for ever on a server that keeps doing it). It is now refused,
    naming the table."""
    link = f"{API}accounts?$select=accountid&$skiptoken=%3Ccookie%20pagenumber=%222%22%20/%3E"
    page = {"@odata.context": f"{API}$metadata#accounts(accountid)",
            "value": [account(ACC1, "One")], "@odata.nextLink": link}
    env.queue = [(200, page, {})] * 3 + [(200, {**page, "@odata.nextLink": None}, {})]
    conn = connector()
    with pytest.raises(FatalError, match="accounts: paging link repeated"):
        if read == "read_by_ids":
            conn.read_by_ids("account", [ACC1])
        else:
            conn.lookup_in("account", "name", ["One"])


def test_a_batch_answer_part_without_a_status_line_is_a_connector_error(env: Env) -> None:
    """A ``$batch`` answer part whose status line cannot be read (``HTTP/1.1 2O4``, a part of
    text) raised ValueError / IndexError out of the connector: a traceback, the push's rows
    left claimed until their lease ran out. It is a ``FatalError`` naming the part (the push
    puts its rows back at once and the run says why); a blank line before a part's status
    line, as some proxies send, is read past."""
    b = "batchresponse_5a3c8e55-6a4f-4b4e-9a7a-c5a0a2bbf0f1"

    def answer(status_lines: list[str]) -> Callable[[list[str]], str]:
        return lambda urls: "".join(
            f"--{b}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary"
            f"\r\n\r\n{line}\r\nOData-Version: 4.0\r\n\r\n\r\n" for line in status_lines
        ) + f"--{b}--\r\n"

    updates = [{"crm_id": ACC1, "billing_hold": True}, {"crm_id": ACC2, "billing_hold": False}]
    for broken in ("HTTP/1.1 2O4 No Content", "no status here"):
        env.batch_answer = answer(["HTTP/1.1 204 No Content", broken])
        with pytest.raises(FatalError, match="part 2 has no HTTP status line"):
            connector().write("account", updates)
    env.batch_answer = answer(["\r\nHTTP/1.1 204 No Content", "HTTP/1.1 204 No Content"])
    assert [r.ok for r in connector().write("account", updates)] == [True, True]


def test_a_webhook_body_nested_too_deep_is_400_and_stores_nothing(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body of JSON nested deeper than the parser goes was a 500 with a traceback (the
    platform retries an asynchronous step's failure with the same body); it is a 400."""
    client = _client(engine, tmp_path, monkeypatch)
    answer = client.post(f"/events/dataverse/dv?code={DV_KEY}",
                         content=b"[" * 100_000 + b"]" * 100_000)
    assert answer.status_code == 400 and "not JSON" in answer.text
    assert _inbox(engine) == []
