"""Schemathesis against the API's own OpenAPI document, over real HTTP to a
real ``python -m dagwright.api`` process backed by the test cluster and Redis.

Every generated request, valid or not, must get a documented, well-formed
answer: never a 500, bodies that match the schema, invalid input refused."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import positive_data_acceptance

from dagwright.api.app import create_app
from dagwright.api.settings import ApiSettings
from tests.conftest import API_TOKEN, ApiProcess, OperatorProcess

# The document is a pure function of the code; the test below checks that the
# running server serves exactly this one.
OPENAPI: dict[str, Any] = create_app(ApiSettings()).openapi()
# A schema-violating body may also be refused for its size (413): an overlong
# string is how some break the schema.
REJECTED = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTED}}}
)
# The live event stream never ends by design (tests/e2e/test_console.py reads it).
schema = schemathesis.openapi.from_dict(OPENAPI, config=CONFIG).exclude(
    path="/api/distributed/live"
)


def test_the_server_serves_this_openapi_document(api_server: ApiProcess) -> None:
    served = httpx.get(f"{api_server.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == OPENAPI


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_request_gets_a_server_error(
    case: Case[Any], api_server: ApiProcess, operator: OperatorProcess
) -> None:
    case.call_and_validate(
        base_url=api_server.url,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        # A schema-valid body can still be refused with 422 on purpose: a cycle,
        # an unknown dependency or a zero timeout is beyond what JSON Schema says.
        excluded_checks=[positive_data_acceptance],
    )
