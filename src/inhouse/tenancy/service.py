"""Tenants and API keys in the store."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inhouse.errors import ConfigurationError, ConflictError, InvalidRequestError, NotFoundError
from inhouse.security.api_keys import ApiKeyHasher, new_id
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.security.secret_file import write_private_file
from inhouse.store.db import Database
from inhouse.store.tables import ApiKeyRow, TenantRow, utcnow
from inhouse.tenancy.models import ApiKeyInfo, Principal, Role, Tenant

TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PLATFORM_TENANT = "platform"


def _tenant(row: TenantRow) -> Tenant:
    return Tenant(id=row.id, name=row.name, is_platform=row.is_platform, created_at=row.created_at)


def _key_info(row: ApiKeyRow, tenant_name: str) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        tenant_id=row.tenant_id,
        tenant_name=tenant_name,
        role=Role(row.role),
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        created_by=row.created_by,
        flows_only=row.flows_only,
    )


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        allowed = ", ".join(role.value for role in Role)
        raise InvalidRequestError(
            f"unknown role {value!r}; use one of: {allowed}", param="role"
        ) from None


class TenantService:
    """Creates, lists and revokes tenants and keys, each change audited in its own
    transaction; resolves key hashes to principals."""

    def __init__(self, db: Database, hasher: ApiKeyHasher, audit: AuditLog) -> None:
        self._db = db
        self._hasher = hasher
        self._audit = audit

    def create_tenant(self, name: str, *, actor: str, is_platform: bool = False) -> Tenant:
        if not TENANT_NAME.match(name):
            raise InvalidRequestError(
                f"invalid tenant name {name!r}: use 1-64 lowercase letters, digits, '-' or '_'",
                param="name",
            )

        def create(session: Session) -> tuple[Tenant, AuditEvent]:
            row = TenantRow(
                id=new_id("ten"), name=name, is_platform=is_platform, created_at=utcnow()
            )
            session.add(row)
            return _tenant(row), AuditEvent(actor, "tenant.create", row.id, target=name)

        try:
            return self._audit.audited(create)
        except IntegrityError:
            raise ConflictError(f"tenant {name!r} already exists", param="name") from None

    def list_tenants(self) -> list[Tenant]:
        with self._db.session() as session:
            rows = session.scalars(select(TenantRow).order_by(TenantRow.created_at)).all()
            return [_tenant(row) for row in rows]

    def get_tenant(self, name: str) -> Tenant:
        with self._db.session() as session:
            row = session.scalar(select(TenantRow).where(TenantRow.name == name))
            if row is None:
                raise NotFoundError(f"tenant {name!r} does not exist", param="tenant")
            return _tenant(row)

    def create_key(
        self,
        tenant_name: str,
        role: Role,
        name: str = "",
        *,
        actor: str,
        created_by: str | None = None,
        flows_only: bool = False,
    ) -> tuple[ApiKeyInfo, str]:
        """Create a key; the plaintext is returned here and never stored.

        ``created_by``: the key or person that made it (its budget is shared, and its
        revocation revokes this key too); ``actor``: who the audit entry names;
        ``flows_only``: the key may call flows only (a key made by such a key is too)."""
        tenant = self.get_tenant(tenant_name)
        if role is Role.PLATFORM_ADMIN and not tenant.is_platform:
            raise InvalidRequestError(
                "the platform-admin role exists only in the platform tenant", param="role"
            )
        new_key = self._hasher.generate()

        def create(session: Session) -> tuple[ApiKeyInfo, AuditEvent]:
            maker = session.get(ApiKeyRow, created_by) if created_by is not None else None
            row = ApiKeyRow(
                id=new_id("key"),
                tenant_id=tenant.id,
                role=role.value,
                name=name,
                prefix=new_key.display_prefix,
                key_hash=new_key.key_hash,
                created_at=utcnow(),
                created_by=created_by,
                flows_only=flows_only or (maker is not None and maker.flows_only),
            )
            session.add(row)
            details = {"role": role, "flows_only": row.flows_only}
            event = AuditEvent(actor, "key.create", tenant.id, row.id, details=details)
            return _key_info(row, tenant.name), event

        return self._audit.audited(create), new_key.plaintext

    def list_keys(
        self, tenant_name: str | None = None, *, owner: str | None = None
    ) -> list[ApiKeyInfo]:
        """Keys, of one tenant if named; with ``owner``, only that key and those it made."""
        query = select(ApiKeyRow, TenantRow.name).join(TenantRow)
        if tenant_name is not None:
            query = query.where(TenantRow.id == self.get_tenant(tenant_name).id)
        if owner is not None:
            query = query.where(or_(ApiKeyRow.id == owner, ApiKeyRow.created_by == owner))
        with self._db.session() as session:
            rows = session.execute(query.order_by(ApiKeyRow.created_at)).all()
            return [_key_info(key, tenant) for key, tenant in rows]

    def revoke_key(
        self,
        key_id_or_prefix: str,
        *,
        actor: str,
        tenant_name: str | None = None,
        owner: str | None = None,
    ) -> ApiKeyInfo:
        """Revoke a key and every key made with it, and with those, and so on.

        ``tenant_name`` and ``owner`` narrow where the key may be found.
        """
        query = (
            select(ApiKeyRow, TenantRow.name)
            .join(TenantRow)
            .where(or_(ApiKeyRow.id == key_id_or_prefix, ApiKeyRow.prefix == key_id_or_prefix))
        )
        if tenant_name is not None:
            query = query.where(TenantRow.name == tenant_name)
        if owner is not None:
            query = query.where(or_(ApiKeyRow.id == owner, ApiKeyRow.created_by == owner))

        def revoke(session: Session) -> tuple[ApiKeyInfo, AuditEvent]:
            matches = session.execute(query).all()
            if not matches:
                raise NotFoundError(f"no key {key_id_or_prefix!r}", param="key")
            if len(matches) > 1:
                raise ConflictError(f"{key_id_or_prefix!r} matches several keys; use the key id")
            row, found_in = matches[0]
            now = utcnow()
            if row.revoked_at is None:
                row.revoked_at = now
            made = _revoke_made_by(session, [row.id], now)
            event = AuditEvent(
                actor, "key.revoke", row.tenant_id, row.id, details={"keys_made_with_it": made}
            )
            return _key_info(row, found_in), event

        return self._audit.audited(revoke)

    def principal_for_plaintext(self, plaintext: str) -> Principal | None:
        key_hash = self._hasher.hash(plaintext)
        with self._db.session() as session:
            found = session.execute(
                select(ApiKeyRow, TenantRow.name, TenantRow.is_platform)
                .join(TenantRow)
                .where(ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None))
            ).first()
            if found is None:
                return None
            row, tenant_name, is_platform = found
            return Principal(
                tenant_id=row.tenant_id,
                tenant_name=tenant_name,
                key_id=row.id,
                role=Role(row.role),
                platform=is_platform,
                makers=_makers(session, row.created_by),
                flows_only=row.flows_only,
            )

    def bootstrap_platform(self, admin_key_file: Path) -> Path | None:
        """On the first start, create the platform tenant and write its admin key to a file.

        Returns the file's path when it was written now, ``None`` when this ran before.
        """
        with self._db.session() as session:
            exists = session.scalar(select(TenantRow.id).where(TenantRow.is_platform.is_(True)))
        if exists is not None:
            return None
        if admin_key_file.exists():
            raise ConfigurationError(
                f"{admin_key_file} exists but this database has no platform tenant; "
                "move the old key file away to bootstrap this database"
            )
        try:
            self.create_tenant(PLATFORM_TENANT, actor="system", is_platform=True)
        except ConflictError:
            return None  # another process bootstrapped concurrently
        _, plaintext = self.create_key(
            PLATFORM_TENANT, Role.PLATFORM_ADMIN, name="bootstrap", actor="system"
        )
        write_private_file(admin_key_file, plaintext + "\n")
        return admin_key_file


def revoke_keys_made_by(session: Session, creator_id: str) -> int:
    """In the caller's transaction: revoke the keys a key or a person made, and the keys
    those made, and so on; returns how many."""
    return _revoke_made_by(session, [creator_id], utcnow())


def _revoke_made_by(session: Session, creators: list[str], now: datetime) -> int:
    """Revoke, level by level, every key made by one of ``creators``; returns how many."""
    revoked, seen = 0, set(creators)
    while creators:
        children = session.scalars(
            select(ApiKeyRow).where(ApiKeyRow.created_by.in_(creators))
        ).all()
        for child in children:
            if child.revoked_at is None:
                child.revoked_at = now
                revoked += 1
        creators = [child.id for child in children if child.id not in seen]
        seen.update(creators)
    return revoked


def _makers(session: Session, created_by: str | None) -> tuple[str, ...]:
    """The chain of keys a key was made with (a person or the CLI ends it)."""
    makers: list[str] = []
    while created_by is not None and created_by not in makers:
        maker = session.get(ApiKeyRow, created_by)
        if maker is None:
            break
        makers.append(maker.id)
        created_by = maker.created_by
    return tuple(makers)
