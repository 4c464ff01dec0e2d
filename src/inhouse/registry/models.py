"""Model entries: the built-in model, local weight directories, remote upstreams."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inhouse.errors import (
    ConflictError,
    EngineUnavailableError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
)
from inhouse.security.api_keys import new_id
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.security.envelope import DecryptionError
from inhouse.security.keyring import Keyring
from inhouse.security.sealed_columns import (
    legacy_model_api_key_context,
    model_api_key_context,
)
from inhouse.security.secret_variables import SecretVariables
from inhouse.store.db import Database
from inhouse.store.tables import ModelRow, utcnow

BUILTIN_MODEL_NAME = "smollm2-135m-instruct"
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


class ModelKind(StrEnum):
    BUILTIN = "builtin"
    LOCAL = "local"
    REMOTE = "remote"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    name: str
    kind: ModelKind
    created_at: datetime
    path: str | None = None
    url: str | None = None
    upstream_model: str | None = None
    api_key_env: str | None = None
    api_key_sealed: str | None = field(default=None, repr=False)
    """The upstream's API key sealed at rest; opened by ``ModelRegistry.upstream_api_key``."""
    tenant_id: str | None = None
    """The owning tenant; None: shared by every tenant."""

    @property
    def is_local(self) -> bool:
        return self.kind is not ModelKind.REMOTE

    def visible_to(self, tenant_id: str) -> bool:
        return self.tenant_id is None or self.tenant_id == tenant_id

    @property
    def node_label(self) -> str:
        """Where it runs, for usage records: this process, or the upstream's host."""
        return "local" if self.url is None else host_label(self.url)


def host_label(url: str) -> str:
    """A URL's host and port, for usage records: never credentials or paths."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return (f"{host}:{parts.port}" if parts.port else host)[:128]


def _entry(row: ModelRow) -> ModelEntry:
    return ModelEntry(
        id=row.id,
        name=row.name,
        kind=ModelKind(row.kind),
        created_at=row.created_at,
        path=row.path,
        url=row.url,
        upstream_model=row.upstream_model,
        api_key_env=row.api_key_env,
        api_key_sealed=row.api_key_sealed,
        tenant_id=row.tenant_id,
    )


def _check_name(name: str) -> None:
    if name.startswith("flow:") or not MODEL_NAME.match(name):
        raise InvalidRequestError(
            f"invalid model name {name!r}: 1-128 letters, digits or . _ : / -, "
            "not starting with 'flow:'",
            param="name",
        )


@dataclass(frozen=True, slots=True)
class TenantOwner:
    """The tenant a model is registered for, and how many models it may have."""

    tenant_id: str
    tenant_name: str
    model_count: int | None = None


class ModelRegistry:
    """Model entries in the store; each addition and removal audited in its transaction."""

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        audit: AuditLog,
        secrets: SecretVariables | None = None,
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._audit = audit
        self._secrets = secrets or SecretVariables()

    def list(self) -> list[ModelEntry]:
        with self._db.session() as session:
            rows = session.scalars(select(ModelRow).order_by(ModelRow.created_at)).all()
            return [_entry(row) for row in rows]

    def get(self, name: str) -> ModelEntry:
        with self._db.session() as session:
            row = session.scalar(select(ModelRow).where(ModelRow.name == name))
            if row is None:
                raise NotFoundError(f"model {name!r} does not exist", param="model")
            return _entry(row)

    def add_builtin(self, *, actor: str) -> ModelEntry:
        row = ModelRow(name=BUILTIN_MODEL_NAME, kind=ModelKind.BUILTIN.value)
        return self._insert(row, actor=actor)

    def add_local(
        self, name: str, path: Path, *, actor: str, owner: TenantOwner | None = None
    ) -> ModelEntry:
        _check_name(name)
        path = path.expanduser().resolve()
        if not (path / "config.json").is_file():
            raise InvalidRequestError(
                f"{path} is not a directory of Hugging Face weights (no config.json)",
                param="path",
            )
        row = ModelRow(name=name, kind=ModelKind.LOCAL.value, path=str(path))
        return self._insert(row, owner, actor=actor)

    def add_remote(
        self,
        name: str,
        url: str,
        *,
        upstream_model: str | None = None,
        api_key_env: str | None = None,
        api_key: str | None = None,
        owner: TenantOwner | None = None,
        actor: str,
    ) -> ModelEntry:
        """A remote upstream; its API key named by a variable, or given and stored sealed."""
        _check_name(name)
        if api_key_env is not None and api_key is not None:
            raise InvalidRequestError(
                "give the upstream's API key or the variable holding it, not both",
                param="api_key",
            )
        if api_key is not None and not api_key.strip():
            raise InvalidRequestError("the upstream API key is empty", param="api_key")
        if not re.match(r"^https?://[^\s/]+", url):
            raise InvalidRequestError(
                f"invalid URL {url!r}: use http(s)://host[:port]/v1", param="url"
            )
        if api_key_env is not None:
            self._secrets.check(api_key_env, param="api_key_env")
        row = ModelRow(
            name=name,
            kind=ModelKind.REMOTE.value,
            url=url.rstrip("/"),
            upstream_model=upstream_model,
            api_key_env=api_key_env,
        )
        return self._insert(row, owner, actor=actor, api_key=api_key.strip() if api_key else None)

    def remove(self, name: str, *, actor: str) -> ModelEntry:
        def remove(session: Session) -> tuple[ModelEntry, AuditEvent]:
            row = session.scalar(select(ModelRow).where(ModelRow.name == name))
            if row is None:
                raise NotFoundError(f"model {name!r} does not exist", param="model")
            session.delete(row)
            return _entry(row), AuditEvent(actor, "model.remove", row.tenant_id, row.name)

        return self._audit.audited(remove)

    def upstream_api_key(self, entry: ModelEntry) -> str | None:
        """The key to send upstream: opened from the store (it opens only for the entry's
        own URL), or read from its variable (only an allowed one, checked again here)."""
        if entry.api_key_sealed is not None:
            context = model_api_key_context(entry.id, entry.url)
            try:
                return self._keyring.decrypt_text(entry.api_key_sealed, context)
            except DecryptionError:
                raise EngineUnavailableError(
                    f"the upstream key of model {entry.name!r} does not open for its URL: the "
                    "entry was changed outside inhouse; remove the model and add it again"
                ) from None
        return self._secrets.read(entry.api_key_env) if entry.api_key_env else None

    def bind_sealed_keys(self) -> int:
        """Re-seal keys sealed before they were bound to their URL; returns how many."""
        bound = 0
        with self._db.session() as session:
            for row in session.scalars(
                select(ModelRow).where(ModelRow.api_key_sealed.is_not(None))
            ):
                assert row.api_key_sealed is not None
                try:
                    self._keyring.decrypt(
                        row.api_key_sealed, model_api_key_context(row.id, row.url)
                    )
                    continue
                except DecryptionError:
                    legacy = legacy_model_api_key_context(row.id)
                    try:
                        plain = self._keyring.decrypt(row.api_key_sealed, legacy)
                    except DecryptionError:
                        continue  # tampered with: it stays unreadable
                row.api_key_sealed = self._keyring.encrypt(
                    plain, model_api_key_context(row.id, row.url)
                )
                bound += 1
        return bound

    def _insert(
        self,
        row: ModelRow,
        owner: TenantOwner | None = None,
        *,
        actor: str,
        api_key: str | None = None,
    ) -> ModelEntry:
        row.id = new_id("mdl")
        if api_key is not None:
            context = model_api_key_context(row.id, row.url)
            row.api_key_sealed = self._keyring.encrypt(api_key, context)
        row.created_at = utcnow()
        row.tenant_id = owner.tenant_id if owner is not None else None

        def insert(session: Session) -> tuple[ModelEntry, AuditEvent]:
            if owner is not None and owner.model_count is not None:
                owned = session.scalar(
                    select(func.count(ModelRow.id)).where(ModelRow.tenant_id == owner.tenant_id)
                )
                if (owned or 0) >= owner.model_count:
                    raise QuotaExceededError(
                        f"tenant {owner.tenant_name!r} has {owned} models, its model_count "
                        f"quota is {owner.model_count}",
                        param="model_count",
                    )
            session.add(row)
            event = AuditEvent(
                actor, "model.add", row.tenant_id, row.name, details={"kind": row.kind}
            )
            return _entry(row), event

        try:
            return self._audit.audited(insert)
        except IntegrityError:
            raise ConflictError(f"model {row.name!r} already exists", param="name") from None
