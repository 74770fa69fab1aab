"""The HTTP API: a thin layer over the service functions for payment systems, portals and
admins. ``jobs.api.app.build_app`` builds it; ``ledgerbridge run --api`` serves it."""
