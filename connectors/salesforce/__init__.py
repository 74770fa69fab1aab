"""Salesforce connector (REST through simple-salesforce)."""
