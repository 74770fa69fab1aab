"""The sObjects and fields the sandbox serves: exactly the fields of docs/FIELDS.md plus system fields,
and PricebookEntry.Price_Start_Date__c (a custom price start date a user's field map may read as
``price.effective_from``; empty in the seed).

Standard objects (Account, Product2, PricebookEntry, Quote, QuoteLineItem) and the Salesforce CPQ
pair (SBQQ__Quote__c, SBQQ__QuoteLine__c), which mirror the seeded quotes and their lines; and,
unseeded (made by admin actions), the Contract a CPQ quote is contracted into (`SBQQ__Quote__c`,
`SBQQ__Opportunity__c`) and the Opportunity of a CPQ renewal (`SBQQ__RenewedContract__c`). A CPQ
quote carries `SBQQ__Type__c` (Quote, Amendment, Renewal), `SBQQ__MasterContract__c` (the
contract an amendment amends) and `SBQQ__Opportunity2__c`; a custom `Cancel_Date__c` on quotes
and quote lines is there for a field map that reads cancellation dates.

Rules this module keeps:
- Field names are canonical here; SOQL and JSON input match them case-insensitively and answers
  always use the canonical spelling.
- System fields (Id, IsDeleted, CreatedDate, LastModifiedDate, SystemModstamp) are read-only.
- Lookups name their target in `REFERENCE_TO`; a lookup's relationship name (`X__c` → `X__r`,
  `AccountId` → `Account`) can be followed in a SELECT list (`SBQQ__MasterContract__r.
  SBQQ__Quote__c`): `relationship()`.
- `monotone` marks fields whose value never decreases with the row index in the seeded (base)
  rows and is never null; the query engine uses them to answer range filters and ordered reads
  without a scan (e.g. QuoteLineItem.QuoteId: a quote's lines are adjacent base rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

STRING, PICKLIST, BOOLEAN, CURRENCY, DOUBLE, INT, DATE, DATETIME, ID, REFERENCE = (
    "string", "picklist", "boolean", "currency", "double", "int", "date", "datetime", "id",
    "reference",
)
QUOTE_STATUSES = (
    "Draft", "Needs Review", "In Review", "Approved", "Rejected", "Presented", "Accepted", "Denied",
)
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF")


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    length: int = 0  # strings: max length
    updateable: bool = True
    values: tuple[str, ...] = ()  # restricted picklist values
    monotone: bool = False
    label: str = ""


@dataclass(frozen=True)
class SObject:
    name: str
    prefix: str
    fields: tuple[Field, ...]
    by_lower: dict[str, Field] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.by_lower.update({f.name.lower(): f for f in self.fields})

    def field(self, name: str) -> Field | None:
        return self.by_lower.get(name.lower())


def _system() -> tuple[Field, ...]:
    return (
        Field("IsDeleted", BOOLEAN, updateable=False),
        Field("CreatedDate", DATETIME, updateable=False, monotone=True),
        Field("LastModifiedDate", DATETIME, updateable=False, monotone=True),
        Field("LastModifiedById", REFERENCE, 18, updateable=False),
        Field("SystemModstamp", DATETIME, updateable=False, monotone=True),
    )


def _id() -> Field:
    return Field("Id", ID, 18, updateable=False, monotone=True)


def _currency_code() -> Field:
    return Field("CurrencyIsoCode", PICKLIST, 3, values=CURRENCIES)


ACCOUNT = SObject("Account", "001", (
    _id(),
    Field("Name", STRING, 255),
    Field("AccountNumber", STRING, 40),
    _currency_code(),
    Field("BillingCountryCode", STRING, 2),
    Field("BillingStateCode", STRING, 10),
    Field("Credit_Limit__c", CURRENCY),
    Field("Credit_Hold__c", BOOLEAN),
    Field("Billing_Hold__c", BOOLEAN),
    Field("Billing_Hold_Reasons__c", STRING, 255, label="Billing Hold Reasons"),
    Field("Open_Balance__c", CURRENCY),
    Field("Available_Credit__c", CURRENCY),
    Field("Credit_Exposure__c", CURRENCY),
    Field("Oldest_Overdue_Days__c", INT),
    Field("Last_Invoice_Number__c", STRING, 40, label="Last Invoice Number"),
    Field("Last_Invoice_Date__c", DATE),
    *_system(),
))
PRODUCT = SObject("Product2", "01t", (
    _id(),
    Field("ProductCode", STRING, 255),
    Field("Name", STRING, 255),
    Field("IsActive", BOOLEAN),
    Field("Billing_Type__c", PICKLIST, 40, values=("Recurring", "One-Time", "Usage")),
    Field("Billing_Frequency__c", PICKLIST, 40, values=("Monthly", "Annual")),
    Field("Needs_Provisioning__c", BOOLEAN),
    *_system(),
))
PRICEBOOK = SObject("Pricebook2", "01s", (
    _id(),
    Field("Name", STRING, 255),
    Field("IsStandard", BOOLEAN, updateable=False),
    Field("IsActive", BOOLEAN),
    *_system(),
))
PRICEBOOK_ENTRY = SObject("PricebookEntry", "01u", (
    _id(),
    Field("Pricebook2Id", REFERENCE, 18),
    Field("Product2Id", REFERENCE, 18, updateable=False, monotone=True),
    _currency_code(),
    Field("UnitPrice", CURRENCY),
    Field("IsActive", BOOLEAN),
    # custom: PricebookEntry has no standard start date; orgs that date prices add one
    Field("Price_Start_Date__c", DATE),
    *_system(),
))
QUOTE = SObject("Quote", "0Q0", (
    _id(),
    Field("QuoteNumber", STRING, 30, updateable=False),
    Field("Name", STRING, 255),
    Field("AccountId", REFERENCE, 18),
    _currency_code(),
    Field("Status", PICKLIST, 40, values=QUOTE_STATUSES),
    Field("Revision__c", INT),
    Field("Subscription_Start_Date__c", DATE),
    Field("ShippingHandling", CURRENCY),    # standard: a charge on the whole quote
    Field("Order_Number__c", STRING, 40, label="Order Number"),
    Field("Provisioning_Status__c", STRING, 40, label="Provisioning Status"),
    Field("Invoice_Number__c", STRING, 40, label="Invoice Number"),
    *_system(),
))
QUOTE_LINE_ITEM = SObject("QuoteLineItem", "0QL", (
    _id(),
    Field("QuoteId", REFERENCE, 18, updateable=False, monotone=True),
    Field("Product2Id", REFERENCE, 18),
    Field("PricebookEntryId", REFERENCE, 18),
    Field("Quantity", DOUBLE),
    Field("UnitPrice", CURRENCY),
    Field("Discount", DOUBLE),              # a percent field in Salesforce: a number here
    Field("ServiceDate", DATE),
    *_system(),
))

CPQ_STATUSES = ("Draft", "In Review", "Approved", "Denied", "Presented", "Accepted", "Rejected")
CPQ_TYPES = ("Quote", "Amendment", "Renewal")
CPQ_QUOTE = SObject("SBQQ__Quote__c", "a0Q", (
    _id(),
    Field("Name", STRING, 80, updateable=False),
    Field("SBQQ__Account__c", REFERENCE, 18),
    _currency_code(),
    Field("SBQQ__Status__c", PICKLIST, 40, values=CPQ_STATUSES, label="Status"),
    Field("SBQQ__Primary__c", BOOLEAN, label="Primary"),
    Field("SBQQ__StartDate__c", DATE, label="Start Date"),
    Field("SBQQ__EndDate__c", DATE, label="End Date"),
    Field("SBQQ__Type__c", PICKLIST, 40, values=CPQ_TYPES, label="Type"),
    Field("SBQQ__MasterContract__c", REFERENCE, 18, label="Master Contract"),
    Field("SBQQ__Opportunity2__c", REFERENCE, 18, label="Opportunity"),
    Field("Cancel_Date__c", DATE, label="Cancel Date"),
    Field("Order_Number__c", STRING, 40, label="Order Number"),
    Field("Provisioning_Status__c", STRING, 40, label="Provisioning Status"),
    Field("Invoice_Number__c", STRING, 40, label="Invoice Number"),
    *_system(),
))
CPQ_QUOTE_LINE = SObject("SBQQ__QuoteLine__c", "a0L", (
    _id(),
    Field("SBQQ__Quote__c", REFERENCE, 18, updateable=False, monotone=True, label="Quote"),
    Field("SBQQ__Product__c", REFERENCE, 18, label="Product"),
    Field("SBQQ__Quantity__c", DOUBLE, label="Quantity"),
    Field("SBQQ__NetPrice__c", CURRENCY, label="Net Unit Price"),
    Field("SBQQ__StartDate__c", DATE, label="Start Date"),
    Field("SBQQ__EndDate__c", DATE, label="End Date"),
    Field("Cancel_Date__c", DATE, label="Cancel Date"),
    *_system(),
))
CONTRACT = SObject("Contract", "800", (
    _id(),
    Field("ContractNumber", STRING, 30, updateable=False),
    Field("AccountId", REFERENCE, 18),
    Field("Status", PICKLIST, 40, values=("Draft", "In Approval Process", "Activated")),
    Field("StartDate", DATE),
    Field("EndDate", DATE, updateable=False),
    Field("ContractTerm", INT),
    Field("SBQQ__Quote__c", REFERENCE, 18, label="Quote"),
    Field("SBQQ__Opportunity__c", REFERENCE, 18, label="Opportunity"),
    Field("SBQQ__RenewalQuoted__c", BOOLEAN, label="Renewal Quoted"),
    *_system(),
))
OPPORTUNITY = SObject("Opportunity", "006", (
    _id(),
    Field("Name", STRING, 120),
    Field("AccountId", REFERENCE, 18),
    Field("StageName", STRING, 40),
    Field("CloseDate", DATE),
    Field("SBQQ__AmendedContract__c", REFERENCE, 18, label="Amended Contract"),
    Field("SBQQ__RenewedContract__c", REFERENCE, 18, label="Renewed Contract"),
    Field("SBQQ__Renewal__c", BOOLEAN, label="Renewal"),
    Field("SBQQ__PrimaryQuote__c", REFERENCE, 18, label="Primary Quote"),
    *_system(),
))

# Documents pushed by billing (docs/CRM_SETUP.md): the custom object an org creates for them,
# and Salesforce Files. VersionData is write-only here (a query never returns a file's body).
DOCUMENT_TYPES = ("Invoice", "Credit Memo", "Debit Memo")
INVOICE = SObject("Invoice__c", "a1I", (
    _id(),
    Field("Name", STRING, 80, label="Invoice Name"),
    Field("Ledger_Document_Id__c", STRING, 64, label="Ledger Document Id"),  # external id, unique
    Field("Account__c", REFERENCE, 18, label="Account"),
    Field("Document_Type__c", PICKLIST, 40, values=DOCUMENT_TYPES, label="Document Type"),
    Field("Issue_Date__c", DATE, label="Issue Date"),
    Field("Due_Date__c", DATE, label="Due Date"),
    Field("Total__c", CURRENCY, label="Total"),
    Field("Balance__c", CURRENCY, label="Balance"),
    Field("Status__c", STRING, 40, label="Status"),
    _currency_code(),
    *_system(),
))
#: The most base64 text a JSON (non-multipart) body may carry for a blob field: 37.5 MB.
MAX_BASE64_JSON = 39_321_600        # 37.5 × 1,048,576
CONTENT_VERSION = SObject("ContentVersion", "068", (
    _id(),
    Field("Title", STRING, 255),
    Field("PathOnClient", STRING, 500),
    Field("VersionData", STRING),
    Field("FirstPublishLocationId", REFERENCE, 18, updateable=False),
    Field("ContentDocumentId", REFERENCE, 18, updateable=False),
    Field("ContentSize", INT, updateable=False),
    Field("FileExtension", STRING, 40, updateable=False),
    *_system(),
))
CONTENT_DOCUMENT = SObject("ContentDocument", "069", (
    _id(),
    Field("Title", STRING, 255),
    Field("LatestPublishedVersionId", REFERENCE, 18, updateable=False),
    Field("ContentSize", INT, updateable=False),
    *_system(),
))
CONTENT_DOCUMENT_LINK = SObject("ContentDocumentLink", "06A", (
    _id(),
    Field("ContentDocumentId", REFERENCE, 18, updateable=False),
    Field("LinkedEntityId", REFERENCE, 18, updateable=False),
    Field("ShareType", PICKLIST, 1, values=("V", "C", "I")),
    Field("Visibility", PICKLIST, 40, values=("AllUsers", "InternalUsers", "SharedUsers")),
    *_system(),
))

OBJECTS: dict[str, SObject] = {
    o.name.lower(): o for o in (ACCOUNT, PRODUCT, PRICEBOOK, PRICEBOOK_ENTRY, QUOTE, QUOTE_LINE_ITEM,
                                CPQ_QUOTE, CPQ_QUOTE_LINE, CONTRACT, OPPORTUNITY, INVOICE,
                                CONTENT_VERSION, CONTENT_DOCUMENT, CONTENT_DOCUMENT_LINK)
}
#: What each lookup field refers to (by field name: the same name refers to the same object).
REFERENCE_TO = {"AccountId": "Account", "Product2Id": "Product2", "QuoteId": "Quote",
                "PricebookEntryId": "PricebookEntry", "Pricebook2Id": "Pricebook2",
                "SBQQ__Account__c": "Account", "SBQQ__Product__c": "Product2",
                "SBQQ__Quote__c": "SBQQ__Quote__c", "SBQQ__MasterContract__c": "Contract",
                "SBQQ__Opportunity2__c": "Opportunity", "SBQQ__Opportunity__c": "Opportunity",
                "SBQQ__AmendedContract__c": "Contract", "SBQQ__RenewedContract__c": "Contract",
                "SBQQ__PrimaryQuote__c": "SBQQ__Quote__c", "Account__c": "Account",
                "ContentDocumentId": "ContentDocument"}


def relationship_name(fld: Field) -> str | None:
    """The relationship name of a lookup (`X__c` → `X__r`, `AccountId` → `Account`)."""
    if fld.type != REFERENCE or fld.name not in REFERENCE_TO:
        return None
    if fld.name.endswith("__c"):
        return fld.name[:-3] + "__r"
    return fld.name[:-2] if fld.name.endswith("Id") else None


def relationship(obj: SObject, name: str) -> tuple[Field, SObject] | None:
    """The lookup of `obj` whose relationship name is `name` (case-insensitive), and the object
    it refers to; None when there is none (or its target is not served)."""
    for fld in obj.fields:
        rel = relationship_name(fld)
        if rel is not None and rel.lower() == name.lower():
            target = sobject(REFERENCE_TO[fld.name])
            return (fld, target) if target is not None else None
    return None
BY_PREFIX: dict[str, SObject] = {o.prefix: o for o in OBJECTS.values()}


def sobject(name: str) -> SObject | None:
    """The sObject called `name` (case-insensitive), or None."""
    return OBJECTS.get(name.lower())
