"""Property-based fuzzing of the whole API from its own OpenAPI document (schemathesis): for
every operation, generated requests (valid and invalid) with an admin token never get a 5xx,
and every answer matches the documented status codes, content types and schemas.

Runs on SQLite and PostgreSQL (PostgreSQL refuses NUL characters and out-of-range integers
that SQLite stores: exactly what the schema's bounds must keep out). The operations are walked
inside one test per database (schemathesis' own pytest fixture loader does not run on pytest 9),
each with Hypothesis. Examples per operation and mode are kept small so the suite stays fast;
set FUZZ_EXAMPLES to fuzz harder.
"""
from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def test_no_server_errors_and_answers_match_the_schema(api, account, invoice):
    api.post("/billing/credit-memos", {"account_id": account, "amount": "50.00",
                                       "reason": "fuzz", "activate": True})
    api.post("/billing/payments", {"account_id": account, "amount": "10.00",
                                   "reference": "fuzz-1"})
    api.post("/billing/credits:grant", {"account_id": account, "amount": "5.00",
                                        "reason": "fuzz"})
    headers = api.headers("admin")
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case: schemathesis.Case) -> None:
                response = case.call(headers=headers)
                case.validate_response(response, checks=CHECKS)

            try:
                check()
            except Unsatisfiable:
                # nothing in this operation can be made invalid (e.g. /healthz)
                assert mode is GenerationMode.NEGATIVE, operation.label
