"""The sync engine: the one place that speaks both CRM and billing.

The design (tables, invariants, transaction boundaries) is the docstring of ``sync.tables``;
one cycle is ``sync.engine.Cycle``. What runs which job with which connector and provisioner is
wiring, outside the engine: ``jobs.worker``.
"""
