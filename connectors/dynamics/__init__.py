"""Dynamics 365 / Dataverse connector (Web API through msal + requests)."""
