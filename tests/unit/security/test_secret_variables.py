"""Which environment variables a model entry or a node may send upstream."""

from __future__ import annotations

import pytest

from inhouse.errors import InvalidRequestError
from inhouse.security.secret_variables import SecretVariables


def test_only_upstream_and_node_token_variables_and_configured_names_are_allowed() -> None:
    secrets = SecretVariables(["VLLM_API_KEY"])
    for allowed in ("INHOUSE_UPSTREAM_GPU", "INHOUSE_NODE_TOKEN", "INHOUSE_NODE_TOKEN_GPU1",
                    "VLLM_API_KEY"):  # fmt: skip
        assert secrets.check(allowed, param="api_key_env") == allowed
    for refused in ("INHOUSE_SECRET_KEY", "INHOUSE_MASTER_KEY", "INHOUSE_NODE_TOKENS",
                    "AWS_SECRET_ACCESS_KEY", "PATH", "VLLM_API_KEY2"):  # fmt: skip
        with pytest.raises(InvalidRequestError, match="may not be sent upstream"):
            secrets.check(refused, param="token_env")
    with pytest.raises(InvalidRequestError, match="invalid variable name"):
        secrets.check("NOT A NAME", param="token_env")


def test_a_refused_name_is_never_read_even_from_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-cloud-password")
    monkeypatch.setenv("INHOUSE_UPSTREAM_GPU", " t0ken \n")
    secrets = SecretVariables()
    assert secrets.read("AWS_SECRET_ACCESS_KEY") is None
    assert secrets.read("INHOUSE_UPSTREAM_GPU") == "t0ken"
    assert secrets.read("INHOUSE_UPSTREAM_UNSET") is None
