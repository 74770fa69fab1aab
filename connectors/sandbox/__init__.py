"""The sandbox CRM: a local HTTPS stand-in for Salesforce and Dataverse (see docs/DESIGN "Sandbox CRM").

Import `connectors.sandbox.server.Sandbox` to run one; `connectors.sandbox.core` holds the contract
shared by the server and its CRM sides. Importing this package does no work.
"""
