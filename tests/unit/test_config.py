from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inhouse.config import Environment, Settings
from inhouse.errors import ConfigurationError


def test_placeholder_secrets_are_refused_outside_development() -> None:
    for placeholder in (None, "changeme", "short"):
        with pytest.raises(ValidationError, match="INHOUSE_SECRET_KEY"):
            Settings(environment=Environment.PRODUCTION, secret_key=placeholder)
    Settings(environment=Environment.PRODUCTION, secret_key="x" * 40)
    Settings(environment=Environment.DEVELOPMENT)


def test_yaml_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "inhouse.yaml"
    config.write_text(
        "server:\n  port: 9100\nengine:\n  default_max_tokens: 64\nlog_level: debug\n"
    )
    monkeypatch.setenv("INHOUSE_CONFIG_FILE", str(config))
    monkeypatch.setenv("INHOUSE_ENGINE__DEFAULT_MAX_TOKENS", "32")
    settings = Settings()
    assert settings.server.port == 9100
    assert settings.engine.default_max_tokens == 32
    assert settings.log_level == "debug"


def test_defaults_live_under_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INHOUSE_MODELS_DIR", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'inhouse.db'}"
    assert settings.resolved_models_dir == tmp_path / "models"
    assert settings.admin_key_file == tmp_path / "admin.key"


def test_a_named_config_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INHOUSE_CONFIG_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigurationError, match=r"missing\.yaml"):
        Settings()
