"""The Dataverse tables the sandbox serves, column by column (docs/FIELDS.md is the contract).

Rules kept:
- A column has one type; `$filter`, `$select`, `$orderby` and writes are checked against it.
- Lookups are read as `_<name>_value` and written as `<name>@odata.bind`; system columns
  (key, createdon, modifiedon, `_modifiedby_value`: the systemuser who last wrote the row,
  versionnumber) are read-only.
- Accounts carry the standard `emailaddress1` (seeded `ap+ac<number>@example.com`: the
  built-in map's `billing_email`) and the standard option set `accountcategorycode` (1
  Preferred Customer, 2 Standard; empty in the seed: a user's map may read it as
  `account_class`).
- Change tracking is on for accounts, quotes and quotedetails; not for products (on purpose, so
  the connector's `modifiedon` fallback is exercised) nor transactioncurrencies.
- Date columns behave as in Dataverse: `quote.effectivefrom` and `quotedetail.requestdeliveryby`
  are date-only columns with "User Local" behaviour (the default of those system columns), so
  they are `Edm.DateTimeOffset` values (`user_local`); `new_lastinvoicedate` is a "Date Only"
  column (`Edm.Date`, a bare date), as is `product.new_pricestartdate`, a custom price start
  date a user's field map may read as `price.effective_from` (empty in the seed).
- Quotes have the custom columns a renewal needs (Dataverse has no renewal quote of its own):
  the option set `new_quotetype` (100000000 New, 100000001 Amendment, 100000002 Renewal) and
  the lookup `new_renewsquote` (`_new_renewsquote_value`, bound as
  `new_renewsquote@odata.bind`) to the quote renewed; quotes and quote lines a "Date Only"
  `new_canceldate`. Empty in the seed; a user's field map reads them (config/fieldmaps/
  dynamics_deals.toml).
"""

from __future__ import annotations

from dataclasses import dataclass

GUID, STRING, MONEY, DECIMAL, BOOL, INT, DATETIME, DATE = (
    "Edm.Guid", "Edm.String", "Edm.Decimal", "Edm.Decimal", "Edm.Boolean", "Edm.Int32",
    "Edm.DateTimeOffset", "Edm.Date",
)
SYSTEM = ("createdon", "modifiedon", "_modifiedby_value", "versionnumber")


@dataclass(frozen=True)
class TableDef:
    """One entity set: its name, entity logical name, key and columns (name -> Edm type)."""

    name: str
    entity: str
    key: str
    columns: dict[str, str]
    tracked: bool
    binds: dict[str, tuple[str, str]]  # nav property -> (lookup column, target entity set)
    user_local: frozenset[str] = frozenset()  # DateTimeOffset columns in date-only format

    @property
    def read_only(self) -> frozenset[str]:
        return frozenset((self.key, *SYSTEM, *(c for c, _ in self.binds.values())))

    @property
    def type_name(self) -> str:
        return f"Microsoft.Dynamics.CRM.{self.entity}"


def _cols(*pairs: tuple[str, str]) -> dict[str, str]:
    return dict(pairs) | {"createdon": DATETIME, "modifiedon": DATETIME,
                          "_modifiedby_value": GUID, "versionnumber": INT}


ACCOUNTS = TableDef(
    "accounts", "account", "accountid",
    _cols(("accountid", GUID), ("name", STRING), ("accountnumber", STRING),
          ("creditlimit", MONEY), ("creditonhold", BOOL), ("_transactioncurrencyid_value", GUID),
          ("address1_country", STRING), ("address1_stateorprovince", STRING),
          ("address1_city", STRING), ("statecode", INT), ("statuscode", INT),
          ("emailaddress1", STRING), ("accountcategorycode", INT),
          ("new_billinghold", BOOL), ("new_billingholdreasons", STRING),
          ("new_openbalance", MONEY), ("new_availablecredit", MONEY),
          ("new_creditexposure", MONEY), ("new_oldestoverduedays", INT),
          ("new_lastinvoicenumber", STRING), ("new_lastinvoicedate", DATE)),
    True, {"transactioncurrencyid": ("_transactioncurrencyid_value", "transactioncurrencies")},
)
PRODUCTS = TableDef(
    "products", "product", "productid",
    _cols(("productid", GUID), ("productnumber", STRING), ("name", STRING), ("statecode", INT),
          ("statuscode", INT), ("new_billingtype", INT), ("new_billingfrequency", INT),
          ("new_needsprovisioning", BOOL), ("price", MONEY),
          ("new_pricestartdate", DATE), ("_transactioncurrencyid_value", GUID)),
    False, {"transactioncurrencyid": ("_transactioncurrencyid_value", "transactioncurrencies")},
)
QUOTES = TableDef(
    "quotes", "quote", "quoteid",
    _cols(("quoteid", GUID), ("quotenumber", STRING), ("name", STRING),
          ("_customerid_value", GUID), ("statecode", INT), ("statuscode", INT),
          ("revisionnumber", INT), ("effectivefrom", DATETIME), ("totalamount", MONEY),
          ("discountpercentage", DECIMAL), ("discountamount", MONEY), ("freightamount", MONEY),
          ("_transactioncurrencyid_value", GUID), ("new_ordernumber", STRING),
          ("new_provisioningstatus", STRING), ("new_invoicenumber", STRING),
          ("new_quotetype", INT), ("_new_renewsquote_value", GUID), ("new_canceldate", DATE)),
    True, {"customerid_account": ("_customerid_value", "accounts"),
           "transactioncurrencyid": ("_transactioncurrencyid_value", "transactioncurrencies"),
           "new_renewsquote": ("_new_renewsquote_value", "quotes")},
    frozenset({"effectivefrom"}),
)
QUOTEDETAILS = TableDef(
    "quotedetails", "quotedetail", "quotedetailid",
    _cols(("quotedetailid", GUID), ("_quoteid_value", GUID), ("_productid_value", GUID),
          ("lineitemnumber", INT), ("quantity", DECIMAL), ("priceperunit", MONEY),
          ("volumediscountamount", MONEY), ("manualdiscountamount", MONEY),
          ("extendedamount", MONEY), ("requestdeliveryby", DATETIME),
          ("_transactioncurrencyid_value", GUID), ("new_canceldate", DATE)),
    True, {"quoteid": ("_quoteid_value", "quotes"), "productid": ("_productid_value", "products"),
           "transactioncurrencyid": ("_transactioncurrencyid_value", "transactioncurrencies")},
    frozenset({"requestdeliveryby"}),
)
CURRENCIES = TableDef(
    "transactioncurrencies", "transactioncurrency", "transactioncurrencyid",
    _cols(("transactioncurrencyid", GUID), ("isocurrencycode", STRING),
          ("currencyname", STRING), ("currencysymbol", STRING), ("currencyprecision", INT),
          ("exchangerate", DECIMAL), ("statecode", INT)),
    False, {},
)
# Documents billing pushes (docs/CRM_SETUP.md): the custom table an org creates for them, with
# the alternate key new_ledgerdocumentid (upserts address rows by it), and notes with files.
NEW_INVOICES = TableDef(
    "new_invoices", "new_invoice", "new_invoiceid",
    _cols(("new_invoiceid", GUID), ("new_name", STRING), ("new_ledgerdocumentid", STRING),
          ("_new_account_value", GUID), ("new_documenttype", STRING), ("new_issuedate", DATE),
          ("new_duedate", DATE), ("new_total", MONEY), ("new_balance", MONEY),
          ("new_status", STRING), ("new_currencycode", STRING)),
    False, {"new_account": ("_new_account_value", "accounts")},
)
# The native Dynamics 365 Sales invoice and its lines (invoice products), with the custom
# columns an org adds for billing's push (docs/CRM_SETUP.md): alternate keys
# new_ledgerdocumentid / new_ledgerlineid, and new_documenttype, new_status, new_currencycode,
# new_issuedate, new_balance. Its totals are computed from the lines (INVOICE_COMPUTED), its
# state is INVOICE_STATES, and a Paid or Canceled invoice is read-only (documents.py).
INVOICES = TableDef(
    "invoices", "invoice", "invoiceid",
    _cols(("invoiceid", GUID), ("name", STRING), ("invoicenumber", STRING),
          ("_customerid_value", GUID), ("duedate", DATETIME), ("description", STRING),
          ("totallineitemamount", MONEY), ("totaltax", MONEY), ("totalamount", MONEY),
          ("statecode", INT), ("statuscode", INT), ("new_ledgerdocumentid", STRING),
          ("new_documenttype", STRING), ("new_status", STRING), ("new_currencycode", STRING),
          ("new_issuedate", DATE), ("new_balance", MONEY)),
    False, {"customerid_account": ("_customerid_value", "accounts")},
    frozenset({"duedate"}),
)
INVOICEDETAILS = TableDef(
    "invoicedetails", "invoicedetail", "invoicedetailid",
    _cols(("invoicedetailid", GUID), ("_invoiceid_value", GUID), ("lineitemnumber", INT),
          ("isproductoverridden", BOOL), ("productdescription", STRING), ("quantity", DECIMAL),
          ("priceperunit", MONEY), ("baseamount", MONEY), ("tax", MONEY),
          ("extendedamount", MONEY), ("new_ledgerlineid", STRING)),
    False, {"invoiceid": ("_invoiceid_value", "invoices")},
)
ANNOTATIONS = TableDef(
    "annotations", "annotation", "annotationid",
    _cols(("annotationid", GUID), ("subject", STRING), ("notetext", STRING),
          ("filename", STRING), ("mimetype", STRING), ("documentbody", STRING),
          ("filesize", INT), ("isdocument", BOOL), ("_objectid_value", GUID),
          ("objecttypecode", STRING)),
    False, {"objectid_new_invoice": ("_objectid_value", "new_invoices"),
            "objectid_invoice": ("_objectid_value", "invoices"),
            "objectid_account": ("_objectid_value", "accounts")},
)
#: Alternate keys (table -> its key columns): `PATCH /<set>(<column>='<value>')` upserts by it,
#: and `<nav>@odata.bind: "/<set>(<column>='<value>')"` binds to the row it names.
ALTERNATE_KEYS = {"new_invoices": ("new_ledgerdocumentid",),
                  "invoices": ("new_ledgerdocumentid",),
                  "invoicedetails": ("new_ledgerlineid",)}
#: Columns Dataverse computes (a write of one is refused here).
INVOICE_COMPUTED = {"invoices": frozenset({"totallineitemamount", "totaltax", "totalamount"}),
                    "invoicedetails": frozenset({"baseamount", "extendedamount"})}
#: An invoice's status reasons by state (unconfirmed; the deprecated Closed state 1 is left
#: out): Active 0 (New 1, Partially Shipped 2, Billed 4, Booked 5, Installed 6), Paid 2
#: (Complete 100001, Partial 100002), Canceled 3 (Canceled 100003).
INVOICE_STATES = {0: (1, 2, 4, 5, 6), 2: (100001, 100002), 3: (100003,)}
#: The org's maximum attachment size (Settings > Email > "maximum file size"), default 5 MB.
MAX_ATTACHMENT_BYTES = 5_242_880
TABLES: dict[str, TableDef] = {t.name: t for t in (ACCOUNTS, PRODUCTS, QUOTES, QUOTEDETAILS,
                                                   CURRENCIES, NEW_INVOICES, ANNOTATIONS,
                                                   INVOICES, INVOICEDETAILS)}
ENTITY_TO_SET: dict[str, str] = {t.entity: t.name for t in TABLES.values()}

# Quote state -> its default status reason (Draft/In Progress, Active/Open, Won, Closed/Lost).
QUOTE_STATUS = {0: 1, 1: 3, 2: 4, 3: 5}
