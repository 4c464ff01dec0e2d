"""What the schema fuzzer (tests/integration/test_fuzz.py) found, pinned: requests that
got a 500 (some only on PostgreSQL) and get a 400 or their answer now, and an OpenAPI
document that now describes the answers the API gives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from inhouse.api.access import all_routes
from inhouse.api.admin_schemas import KeyCreate, TenantCreate, TenantOut
from inhouse.api.app import create_app
from inhouse.config import Settings
from inhouse.errors import InvalidRequestError
from inhouse.protocol.body import parse_body
from inhouse.protocol.openai import ChatCompletionRequest, CompletionRequest, to_json_object
from inhouse.tenancy.models import Tenant
from inhouse.tenancy.permissions import Permission
from tests.conftest import shared_models_dir

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()  # orjson itself cannot write these integers


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": 2**31}, "max_tokens"),
        ({"max_completion_tokens": 10**30}, "max_completion_tokens"),
        ({"seed": 2**63}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
        ({"logit_floor": -(2**63) - 1}, "logit_floor"),  # nineteen digits
        ({"tools": [1, {"a": -(10**20)}]}, "tools.1.a"),
        (
            {"stream": True, "stream_options": {"include_usage": True, "x": 2**64}},
            "stream_options.x",
        ),
        ({"messages": [{"role": "user", "content": "hi", "weight": 10**40}]}, "messages.0.weight"),
    ],
)
def test_integers_json_cannot_carry_on_are_refused(fields: dict[str, Any], param: str) -> None:
    # They reached orjson on the way to a remote engine: "Integer exceeds 64-bit range".
    with pytest.raises(InvalidRequestError) as caught:
        parse_body(ChatCompletionRequest, _body(**{**CHAT, **fields}))
    assert caught.value.param == param
    assert caught.value.status_code == 400


def test_best_of_out_of_range_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_body(CompletionRequest, _body(model="m", prompt="x", best_of=10**30))
    assert caught.value.param == "best_of"


def test_large_numbers_that_fit_and_long_digit_strings_pass() -> None:
    request = parse_body(
        ChatCompletionRequest,
        _body(
            model="m",
            messages=[{"role": "user", "content": "1234567890123456789012345"}],
            seed=2**63 - 1,
            max_tokens=2**31 - 1,
            big=2**64 - 1,
            small=-(2**63),
        ),
    )
    orjson.dumps(to_json_object(request))  # what goes to a remote engine


def test_a_float_in_an_integer_field_cannot_grow_out_of_range() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_body(ChatCompletionRequest, orjson.dumps(CHAT)[:-1] + b', "seed": 1e30}')
    assert caught.value.param == "seed"


@pytest.mark.parametrize("model", [TenantCreate, KeyCreate])
def test_names_with_nul_are_refused(model: type[TenantCreate | KeyCreate]) -> None:
    # PostgreSQL text cannot hold NUL: the insert failed with a DataError.
    with pytest.raises(ValidationError, match="NUL"):
        model.model_validate({"name": "a\x00b"})


def test_times_read_back_from_sqlite_carry_their_zone() -> None:
    tenant = Tenant(id="ten_a", name="a", is_platform=False, created_at=datetime(2026, 1, 2, 3, 4))
    assert TenantOut.of(tenant).model_dump(mode="json")["created_at"] == "2026-01-02T03:04:00Z"


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("fuzz-regressions") / "data"
    settings = Settings(data_dir=data_dir, models_dir=shared_models_dir(), builtin_model=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        key = (data_dir / "admin.key").read_text().strip()
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


@pytest.mark.parametrize(
    ("method", "path", "param"),
    [
        ("GET", "/admin/tenants/a%00b", "tenant"),
        ("GET", "/admin/tenants/p%00/keys", "tenant"),
        ("DELETE", "/admin/tenants/platform/keys/key%00", "key_id"),
        ("GET", "/admin/tenants/platform/quotas?key=k%00", "key"),
        ("GET", "/admin/usage?key=k%00", "key"),
        ("GET", "/admin/usage?tenant=t%00", "tenant"),
        ("GET", "/admin/audit?tenant=t%00", "tenant"),
    ],
)
def test_nul_in_paths_and_queries_is_a_bad_request(
    admin: TestClient, method: str, path: str, param: str
) -> None:
    # PostgreSQL refused the lookup with a DataError.
    response = admin.request(method, path)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "NUL" in error["message"]
    assert error["param"] == param


def test_a_refused_member_of_a_union_is_named_by_its_field(admin: TestClient) -> None:
    response = admin.patch("/admin/tenants/platform/quotas", json={"memory_limit": 1e300})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "memory_limit"


def test_usage_up_to_the_last_day_there_is(admin: TestClient) -> None:
    # The day after 9999-12-31 overflowed: OverflowError, a 500.
    response = admin.get("/admin/usage", params={"since": "2026-01-01", "until": "9999-12-31"})
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": []}


def test_the_document_describes_the_answers_the_api_gives(admin: TestClient) -> None:
    document = admin.get("/openapi.json").json()
    error = {"$ref": "#/components/schemas/Error"}
    public = {
        route.path
        for route in all_routes(admin.app.routes)  # type: ignore[attr-defined]
        if route.permission is Permission.PUBLIC
    }
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "422" not in responses, f"{method} {path}: the API answers 400, not 422"
            for status, response in responses.items():
                if status.startswith("4"):
                    assert response["content"]["application/json"]["schema"] == error
            if path not in public:
                assert operation["security"] == [{"bearer": []}], f"{method} {path}"
                assert {"401", "403"} <= set(responses), f"{method} {path}"
    stream = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert stream["text/event-stream"]["schema"]["required"] == ["data"]  # one event
    assert "HTTPValidationError" not in document["components"]["schemas"]
