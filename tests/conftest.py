"""Fixtures shared by all tests: settings on a temporary data directory, and the
database backends (SQLite always, PostgreSQL when it is reachable).

A test that needs PostgreSQL or Redis skips, with the reason, when the service is not
reachable on a developer's machine; in CI (``CI=true``) it fails instead, so that a
missing service can never turn a run green by skipping what it was meant to check."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from inhouse.config import Settings

REPO = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get(
    "INHOUSE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("INHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(reason: str) -> None:
    """Skip the test, or fail it in CI: a service CI promises must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the service must run; this test does not skip)")
    pytest.skip(reason)


def shared_models_dir() -> Path:
    """The model store the built-in model is converted into once for the whole suite."""
    return Path(os.environ.get("INHOUSE_MODELS_DIR", REPO / ".cache" / "models"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", models_dir=shared_models_dir())


def _postgres_unavailable_reason() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {type(exc).__name__}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    reason = _postgres_unavailable_reason()
    if reason is not None:
        service_missing(reason)
    import psycopg

    name = f"inhouse_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def redis_unavailable_reason() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return None
    except Exception as exc:
        return f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}"


@pytest.fixture
def redis_url() -> str:
    """The Redis the quota tests share; each test uses its own tenant and key ids."""
    reason = redis_unavailable_reason()
    if reason is not None:
        service_missing(reason)
    return REDIS_URL
