"""Admission on the request path: estimates, the max_tokens a token quota needs, priority."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inhouse.config import Settings
from inhouse.errors import InvalidRequestError
from inhouse.gateway.admission import (
    MEDIA_PART_ALLOWANCE,
    TEMPLATE_ALLOWANCE,
    Admission,
    Admitted,
    bound_length_fields,
    estimate_tokens,
)
from inhouse.protocol.openai import ChatCompletionRequest, CompletionRequest
from inhouse.protocol.types import Priority
from inhouse.registry.models import ModelEntry, ModelKind
from inhouse.security.api_keys import ApiKeyHasher
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.tenancy.admission import LocalLimiter
from inhouse.tenancy.models import Principal, Role
from inhouse.tenancy.quotas import LimitsCache, QuotaService
from inhouse.tenancy.service import TenantService
from tests.keyrings import audit_for

NOW = datetime(2026, 11, 25, tzinfo=UTC)
REMOTE = ModelEntry("mdl_r", "big", ModelKind.REMOTE, NOW, url="http://10.0.0.1:8000/v1")
TWO_PROMPTS = CompletionRequest.model_validate(
    {"model": "m", "prompt": ["a", "b"], "max_tokens": 5}
)
LOCAL = ModelEntry("mdl_l", "small", ModelKind.LOCAL, NOW, path="/models/small")


def chat(**fields: object) -> ChatCompletionRequest:
    body = {"model": "big", "messages": [{"role": "user", "content": "hello"}], **fields}
    return ChatCompletionRequest.model_validate(body)


def admit(
    tmp_path: Path, request: ChatCompletionRequest, entry: ModelEntry, **quota: object
) -> Admitted:
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    upgrade_to_head(db.engine)
    tenants = TenantService(db, ApiKeyHasher(b"k" * 32), audit_for(db))
    tenant = tenants.create_tenant("acme", actor="test")
    key, _ = tenants.create_key("acme", Role.DEVELOPER, actor="test")
    quotas = QuotaService(db, audit_for(db))
    if quota:
        quotas.update("acme", quota, actor="test")
    settings = Settings(data_dir=tmp_path)
    admission = Admission(LimitsCache(quotas, ttl_seconds=0), LocalLimiter(), settings)
    caller = Principal(tenant.id, "acme", key.id, Role.DEVELOPER)
    return asyncio.run(admission.admit(caller, request, is_local=entry.is_local))


def test_without_quotas_nothing_is_reserved_or_changed(tmp_path: Path) -> None:
    request = chat()
    admitted = admit(tmp_path, request, REMOTE)
    assert admitted.ticket is None and admitted.request is request
    assert admitted.priority is Priority.NORMAL


def test_a_token_quota_gives_a_remote_request_without_max_tokens_the_default(
    tmp_path: Path,
) -> None:
    admitted = admit(tmp_path, chat(), REMOTE, tokens_per_day=10**6, priority="high")
    assert admitted.request.max_tokens == Settings().gateway.default_max_tokens
    assert admitted.ticket is not None
    assert admitted.ticket.estimate == estimate_tokens(admitted.request, 0)
    assert admitted.priority is Priority.HIGH


def test_local_models_keep_their_engine_default(tmp_path: Path) -> None:
    admitted = admit(tmp_path, chat(), LOCAL, tokens_per_day=10**6)
    assert admitted.request.max_tokens is None
    assert admitted.ticket is not None
    assert admitted.ticket.estimate == estimate_tokens(chat(), Settings().engine.default_max_tokens)


def test_rate_limits_alone_reserve_no_tokens(tmp_path: Path) -> None:
    admitted = admit(tmp_path, chat(), REMOTE, requests_per_minute=10)
    assert admitted.ticket is not None and admitted.ticket.estimate == 0
    assert admitted.request.max_tokens is None


@pytest.mark.parametrize(
    ("request_", "completions"),
    [
        (chat(max_tokens=10), 10),
        (chat(max_tokens=10, n=3), 30),
        (
            CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"], "max_tokens": 5}),
            10,
        ),
    ],
)
def test_the_estimate_bounds_prompt_bytes_and_every_completion(
    request_: ChatCompletionRequest | CompletionRequest, completions: int
) -> None:
    body_bytes = len(request_.model_dump_json(exclude_unset=True).encode())
    assert estimate_tokens(request_, 999) == body_bytes + TEMPLATE_ALLOWANCE + completions


def test_the_prompt_bound_counts_bytes_not_characters() -> None:
    def one_message(content: str) -> ChatCompletionRequest:
        return chat(messages=[{"role": "user", "content": content}], max_tokens=1)

    # Seven CJK characters are 21 bytes of UTF-8; seven ASCII letters are 7.
    chinese, latin = one_message("请总结这份病历"), one_message("abcdefg")
    assert estimate_tokens(chinese, 0) - estimate_tokens(latin, 0) == 14


def test_best_of_and_media_parts_raise_the_estimate() -> None:
    best_of = CompletionRequest.model_validate(
        {"model": "m", "prompt": "a", "max_tokens": 10, "best_of": 4}
    )
    body_bytes = len(best_of.model_dump_json(exclude_unset=True).encode())
    assert estimate_tokens(best_of, 0) == body_bytes + TEMPLATE_ALLOWANCE + 40
    image = {"type": "image_url", "image_url": {"url": "https://intranet/x.png"}}
    text = {"type": "text", "text": "what is this?"}
    with_image = chat(messages=[{"role": "user", "content": [text, image]}], max_tokens=1)
    without = chat(messages=[{"role": "user", "content": [text]}], max_tokens=1)
    difference = estimate_tokens(with_image, 0) - estimate_tokens(without, 0)
    assert difference > MEDIA_PART_ALLOWANCE


def test_the_injected_max_tokens_fits_the_smallest_token_quota(tmp_path: Path) -> None:
    admitted = admit(tmp_path, chat(), REMOTE, tokens_per_minute=1000)
    assert admitted.request.max_tokens is not None
    assert admitted.request.max_tokens < 1000
    assert admitted.ticket is not None and admitted.ticket.estimate <= 1000


def test_engine_length_fields_are_clamped_to_max_tokens() -> None:
    request = chat(
        max_tokens=16,
        n_predict=4096,
        max_new_tokens=-1,
        min_tokens=8,
        options={"num_predict": 10_000, "temperature": 0},
    )
    bounded = bound_length_fields(request)
    extra = bounded.model_extra or {}
    assert (extra["n_predict"], extra["max_new_tokens"], extra["min_tokens"]) == (16, 16, 8)
    assert extra["options"] == {"num_predict": 16, "temperature": 0}
    assert bound_length_fields(chat(n_predict=4096)).model_extra == {"n_predict": 4096}
    with pytest.raises(InvalidRequestError, match="n_predict"):
        bound_length_fields(chat(max_tokens=4, n_predict=2.5))
