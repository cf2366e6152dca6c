"""Property-based fuzzing of the OpenAPI document with schemathesis, on both stores.

Every operation gets 200 schema-valid and 200 schema-invalid requests (hypothesis
stops earlier only when an operation has fewer distinct inputs, e.g. no
parameters at all); no response may be a 5xx, and every response must carry a
declared status, content type and headers and match its schema.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from engine.serve import build

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
EXAMPLES = 200
OPERATIONS = ["POST /v1/check", "POST /v1/events", "GET /v1/timeline", "GET /v1/rules", "GET /v1/schema",
              "GET /v1/decisions", "GET /healthz", "GET /readyz", "GET /metrics"]


NO_INPUT = {"GET /v1/timeline", "GET /v1/schema", "GET /healthz", "GET /readyz", "GET /metrics"}
CASES = [(op, mode) for op in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if not (mode is GenerationMode.NEGATIVE and op in NO_INPUT)]  # nothing there to make invalid


@pytest.mark.parametrize("operation,mode", CASES, ids=[f"{op}-{mode.value}" for op, mode in CASES])
def test_operation(store_url, operation, mode, policies):
    app, service = build(store_url, policies=policies, warm=True)  # the classifier's first load is slow
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        found = {f"{o.method.upper()} {o.path}": o for o in (r.ok() for r in schema.get_all_operations())}
        assert set(found) == set(OPERATIONS)
        op = found[operation]
        calls = []

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            response = case.call()
            calls.append(response.status_code)
            case.validate_response(response, checks=CHECKS)

        fuzz()
        print(f"\nschemathesis {operation} {mode.value}: {len(calls)} calls, statuses "
              f"{dict(sorted((s, calls.count(s)) for s in set(calls)))}")
        assert calls
    finally:
        service.close()
        service.store.close()
