"""Fuzzing the whole API of a running gateway with schemathesis.

Every operation of the OpenAPI document the gateway serves is called with requests
generated from that document, valid and invalid, once with a platform admin's key
and once without credentials, on SQLite and on PostgreSQL. No answer may be a 5xx or
stray from the document, every protected operation refuses a caller without a key,
and the process is still alive and healthy at the end.

The gateway runs without the built-in model (generation on the CPU is slow): a
remote model on a fake upstream answers instead, and half of the generated
inference bodies name it, so that they are relayed end to end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from inhouse.api.access import all_routes
from inhouse.api.app import create_app
from inhouse.config import Settings
from inhouse.tenancy.permissions import Permission
from tests.integration.fake_upstream import FakeUpstream
from tests.integration.server import InhouseProcess

MODEL = "fuzzed-llm"
"""A remote model on the fake upstream."""
TENANT = "fuzzed"
"""A tenant that exists, so that routes under /admin/tenants/{tenant} get past the 404."""
MAX_EXAMPLES = 25
"""Per operation, generation mode and credentials: the file runs in about a minute."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# Failure reports show body fields such as max_tokens; the key stays hidden.
CONFIG = schemathesis.Config.from_dict(
    {
        "output": {
            "sanitization": {
                "keys-to-sanitize": ["authorization"],
                "sensitive-markers": ["authorization"],
            }
        }
    }
)


@dataclass(frozen=True)
class Target:
    server: InhouseProcess
    schema: BaseSchema
    key_id: str
    """A key of TENANT. Revoking it is fine; the admin key's id cannot be guessed."""


@pytest.fixture
def target(tmp_path: Path, database_url: str) -> Iterator[Target]:
    url = database_url.replace("postgresql://", "postgresql+psycopg://")
    with FakeUpstream(reply_text="a fuzzed reply") as upstream:
        server = InhouseProcess(
            tmp_path / "data", builtin_model=False, INHOUSE_DATABASE_URL=url
        ).start()
        try:
            server.cli("models", "add", MODEL, "--url", upstream.url)
            admin = httpx.Client(
                base_url=server.base_url,
                headers={"Authorization": f"Bearer {server.admin_key}"},
                timeout=30,
            )
            with admin:
                assert admin.post("/admin/tenants", json={"name": TENANT}).status_code == 201
                key = admin.post(f"/admin/tenants/{TENANT}/keys", json={})
                _wait_for_model(admin)
            schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json", config=CONFIG)
            yield Target(server, schema, key.json()["id"])
        finally:
            server.stop()


def _wait_for_model(admin: httpx.Client) -> None:
    deadline = time.monotonic() + 10
    while MODEL not in admin.get("/v1/models").text:
        assert time.monotonic() < deadline, f"{MODEL} never appeared in /v1/models"
        time.sleep(0.2)


def _routes(tmp_path: Path) -> dict[tuple[str, str], Permission | None]:
    """Every route of the gateway but the document itself, with the permission it needs."""
    app = create_app(Settings(data_dir=tmp_path / "routes"))
    return {
        (method, route.path): route.permission
        for route in all_routes(app.routes)
        for method in route.methods
        if method != "HEAD" and route.path != app.openapi_url
    }


def _cases(operation: APIOperation, mode: GenerationMode, key_id: str) -> st.SearchStrategy[Case]:
    """Generated cases, and as many aimed at a tenant and a key that exist."""
    generated = operation.as_strategy(generation_mode=mode)
    existing = {"tenant": TENANT, "key_id": key_id}
    aimed = {
        parameter.name: existing[parameter.name]
        for parameter in operation.path_parameters
        if parameter.name in existing
    }
    if not aimed:
        return generated
    return st.one_of(generated, operation.as_strategy(generation_mode=mode, path_parameters=aimed))


def _fuzz(
    operation: APIOperation,
    mode: GenerationMode,
    target: Target,
    key: str | None,
    public: bool,
) -> list[str]:
    """Fuzz one operation; the failures, each with a curl command that reproduces it."""
    failures: list[str] = []

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests on every run
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is reported
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_cases(operation, mode, target.key_id), name_the_model=st.booleans())
    def run(case: Case, name_the_model: bool) -> None:
        if name_the_model and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = MODEL
        if case.headers:
            case.headers.pop("Authorization", None)
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        response = case.call(base_url=target.server.base_url, headers=headers, timeout=30)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as exc:
            failures.append(str(exc))
        if key is None and not public:
            # FastAPI refuses a body that is not JSON before it asks for the caller.
            allowed = {401} if mode is GenerationMode.POSITIVE else {400, 401}
            if response.status_code not in allowed:
                failures.append(f"{operation.label} answered {response.status_code} without a key")

    try:
        run()
    except Unsatisfiable:
        # Nothing about the operation can be made invalid: no parameters, no body.
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


def test_no_generated_request_gets_a_server_error(target: Target, tmp_path: Path) -> None:
    operations = []
    for result in target.schema.get_all_operations():
        assert isinstance(result, Ok), f"an operation schemathesis cannot use: {result.err()}"
        operations.append(result.ok())
    routes = _routes(tmp_path)
    documented = {(operation.method.upper(), operation.path) for operation in operations}
    assert documented == set(routes), "every route is in the OpenAPI document"

    failures: list[str] = []
    for key in (target.server.admin_key, None):
        for operation in operations:
            public = routes[operation.method.upper(), operation.path] is Permission.PUBLIC
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                failures += _fuzz(operation, mode, target, key, public)
    assert not failures, "\n\n".join(failures)

    assert target.server.process is not None and target.server.process.poll() is None
    assert httpx.get(f"{target.server.base_url}/healthz", timeout=10).status_code == 200
