"""The sandbox CRM: a local HTTPS stand-in for Salesforce and Dataverse (DESIGN.md "Sandbox CRM").

Importing this package does no work. A test starts one and talks to it with the real clients:

    from connectors.sandbox.server import Sandbox

    with Sandbox(seed=7, accounts=10_000) as sandbox:          # port 0: any free port
        sf = sandbox.salesforce_client()                        # simple-salesforce, fresh token
        sf.query_all("SELECT Id, Credit_Hold__c FROM Account")
        sandbox.salesforce.admin("set_hold", {"index": 3})     # a CRM user's change
        sandbox.faults.add("salesforce", "query", "503", count=1)
        sandbox.counters.get("salesforce", "query", "GET")

or builds its own client: `Salesforce(instance_url=sandbox.url, session_id=token,
session=CABundleSession(sandbox.ca_bundle))` (connectors.sandbox.tls: the CA bundle wins over
REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE), with a token from `POST {url}/services/oauth2/token`
(credentials in `sandbox.salesforce.credentials`) or `sandbox.salesforce.issue_token()`.

Modules: core (the contract shared by the server and the sides), server (Sandbox,
serve_forever), admin_api (/__admin__), tls (CABundleSession), cli (`ledgerbridge sandbox`),
notify (change events: `Sandbox(notify=NotifyConfig(url=...))` posts Dataverse webhooks and
Salesforce outbound messages for every change), salesforce/ (the Salesforce side), dataverse/
(the Dataverse side).
"""
