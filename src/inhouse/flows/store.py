"""Flows of each tenant in the store: versions, the published one, rollback, all audited.

``apply`` validates a spec, stores it as the next version and publishes it; ``rollback``
publishes an earlier version (the previous one by default). Versions are never changed
or deleted, so a rollback is itself undone by rolling forward with ``--to``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inhouse.errors import ConflictError, InvalidRequestError, NotFoundError, PermissionDeniedError
from inhouse.flows.runner import CompiledFlow
from inhouse.flows.spec import FlowSpec, StepSpec, validate_spec
from inhouse.flows.step_registry import StepRegistry
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.store.db import Database
from inhouse.store.tables import FlowReleaseRow, FlowVersionRow, TenantRow, utcnow


@dataclass(frozen=True, slots=True)
class FlowInfo:
    tenant_id: str
    name: str
    published: int
    latest: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FlowVersion:
    tenant_id: str
    name: str
    version: int
    spec: FlowSpec
    created_at: datetime
    created_by: str
    published: bool


class FlowStore:
    def __init__(self, db: Database, registry: StepRegistry, audit: AuditLog) -> None:
        self._db = db
        self._registry = registry
        self._audit = audit

    @property
    def registry(self) -> StepRegistry:
        """The step types this store validates and builds flows with."""
        return self._registry

    def apply(
        self,
        tenant_name: str,
        data: dict[str, Any],
        *,
        actor: str,
        may_hide_label: bool = True,
        lexicon_root: Path | None = None,
    ) -> FlowVersion:
        """Validate, store as the next version, publish.

        ``may_hide_label``: whether the actor may turn the visible AI-generated notice
        off (tenant-admins and the platform's operators). ``lexicon_root``: lexicon
        files must lie inside it and relative paths start there (callers of the admin
        API); None: an operator on the host, paths relative to the working directory.
        Lexicon paths are stored absolute, so every gateway reads the same file.
        """
        spec = self.validate(data, lexicon_root=lexicon_root)
        if _hides_ai_label(spec) and not may_hide_label:
            raise PermissionDeniedError(
                "only a tenant-admin may turn the visible AI-generated label off",
                param="post",
                code="label_requires_tenant_admin",
            )
        document = spec.model_dump_json(exclude_defaults=False)
        hidden = _hides_ai_label(spec)

        def apply(session: Session) -> tuple[FlowVersion, AuditEvent]:
            tenant_id = _tenant_id(session, tenant_name)
            latest = session.scalar(
                select(func.max(FlowVersionRow.version)).where(
                    FlowVersionRow.tenant_id == tenant_id, FlowVersionRow.name == spec.name
                )
            )
            version = (latest or 0) + 1
            now = utcnow()
            session.add(
                FlowVersionRow(
                    tenant_id=tenant_id,
                    name=spec.name,
                    version=version,
                    spec=document,
                    created_at=now,
                    created_by=actor,
                )
            )
            session.merge(
                FlowReleaseRow(tenant_id=tenant_id, name=spec.name, version=version, updated_at=now)
            )
            details: dict[str, Any] = {"version": version, "previous": latest or 0}
            if hidden:
                details["ai_label_visible"] = False  # the choice the rules ask to be logged
            event = AuditEvent(
                actor, "flow.apply", tenant_id, target=f"flow:{spec.name}", details=details
            )
            return FlowVersion(tenant_id, spec.name, version, spec, now, actor, True), event

        for _ in range(5):  # two applies at once: one gets the next number
            try:
                return self._audit.audited(apply)
            except IntegrityError:
                continue
        raise ConflictError(f"flow {spec.name!r} is being changed by someone else; retry")

    def validate(self, data: dict[str, Any], *, lexicon_root: Path | None = None) -> FlowSpec:
        """A spec that would apply: valid, its lexicons placed, and it builds."""
        spec = _place_lexicons(validate_spec(data, self._registry), lexicon_root)
        CompiledFlow(spec, self._registry)  # it must build now: lexicon files exist, ...
        return spec

    def versions(self, tenant_name: str, name: str) -> list[FlowVersion]:
        """Every version of a flow, oldest first."""
        with self._db.session() as session:
            tenant_id = _tenant_id(session, tenant_name)
            release = session.get(FlowReleaseRow, (tenant_id, name))
            if release is None:
                raise NotFoundError(f"flow {name!r} does not exist", param="flow")
            rows = session.scalars(
                select(FlowVersionRow)
                .where(FlowVersionRow.tenant_id == tenant_id, FlowVersionRow.name == name)
                .order_by(FlowVersionRow.version)
            ).all()
            return [self._version(row, published=row.version == release.version) for row in rows]

    def rollback(
        self,
        tenant_name: str,
        name: str,
        *,
        to: int | None = None,
        actor: str,
        may_hide_label: bool = True,
    ) -> FlowVersion:
        """Publish version ``to``, or the one before the published one (hiding the AI
        label again takes what ``apply`` takes)."""

        def rollback(session: Session) -> tuple[FlowVersion, AuditEvent]:
            tenant_id = _tenant_id(session, tenant_name)
            release = session.get(FlowReleaseRow, (tenant_id, name))
            if release is None:
                raise NotFoundError(f"flow {name!r} does not exist", param="flow")
            previous = release.version
            target = to if to is not None else previous - 1
            if target < 1:
                raise InvalidRequestError(
                    f"flow {name!r} is at version {previous}: there is no earlier one",
                    param="to",
                )
            row = session.get(FlowVersionRow, (tenant_id, name, target))
            if row is None:
                raise NotFoundError(f"flow {name!r} has no version {target}", param="to")
            version = self._version(row, published=True)
            hidden = _hides_ai_label(version.spec)
            if hidden and not may_hide_label:
                raise PermissionDeniedError(
                    f"version {target} hides the visible AI-generated label: only a "
                    "tenant-admin may publish it",
                    param="to",
                    code="label_requires_tenant_admin",
                )
            release.version = target
            release.updated_at = utcnow()
            details: dict[str, Any] = {"version": target, "previous": previous}
            if hidden:
                details["ai_label_visible"] = False
            event = AuditEvent(
                actor, "flow.rollback", tenant_id, target=f"flow:{name}", details=details
            )
            return version, event

        return self._audit.audited(rollback)

    def list(self, tenant_name: str | None = None) -> list[FlowInfo]:
        latest = (
            select(
                FlowVersionRow.tenant_id,
                FlowVersionRow.name,
                func.max(FlowVersionRow.version).label("latest"),
            )
            .group_by(FlowVersionRow.tenant_id, FlowVersionRow.name)
            .subquery()
        )
        query = (
            select(FlowReleaseRow, latest.c.latest)
            .join(
                latest,
                (latest.c.tenant_id == FlowReleaseRow.tenant_id)
                & (latest.c.name == FlowReleaseRow.name),
            )
            .order_by(FlowReleaseRow.name)
        )
        with self._db.session() as session:
            if tenant_name is not None:
                query = query.where(FlowReleaseRow.tenant_id == _tenant_id(session, tenant_name))
            return [
                FlowInfo(row.tenant_id, row.name, row.version, int(top), row.updated_at)
                for row, top in session.execute(query).all()
            ]

    def show(self, tenant_name: str, name: str, version: int | None = None) -> FlowVersion:
        with self._db.session() as session:
            return self._find(session, _tenant_id(session, tenant_name), name, version)

    def published(self, tenant_id: str, name: str) -> FlowVersion | None:
        """What ``flow:NAME`` runs for the tenant now (None: no such flow)."""
        with self._db.session() as session:
            try:
                return self._find(session, tenant_id, name, None)
            except NotFoundError:
                return None

    def _find(
        self, session: Session, tenant_id: str, name: str, version: int | None
    ) -> FlowVersion:
        release = session.get(FlowReleaseRow, (tenant_id, name))
        if release is None:
            raise NotFoundError(f"flow {name!r} does not exist", param="flow")
        wanted = release.version if version is None else version
        row = session.get(FlowVersionRow, (tenant_id, name, wanted))
        if row is None:
            raise NotFoundError(f"flow {name!r} has no version {wanted}", param="version")
        return self._version(row, published=wanted == release.version)

    def _version(self, row: FlowVersionRow, *, published: bool) -> FlowVersion:
        spec = FlowSpec.model_validate(json.loads(row.spec))
        return FlowVersion(
            row.tenant_id, row.name, row.version, spec, row.created_at, row.created_by, published
        )


def _place_lexicons(spec: FlowSpec, root: Path | None) -> FlowSpec:
    """The spec with each ``terms`` step's lexicon as an absolute path (inside ``root``)."""
    changed = False
    stages: dict[str, list[StepSpec]] = {"pre": [], "post": []}
    for stage, steps in (("pre", spec.pre), ("post", spec.post)):
        for index, step in enumerate(steps):
            lexicon = step.options.get("lexicon") if step.type == "terms" else None
            if isinstance(lexicon, str):
                placed = _lexicon_path(lexicon, root, where=f"{stage}.{index}.options.lexicon")
                step = step.model_copy(update={"options": {**step.options, "lexicon": placed}})
                changed = True
            stages[stage].append(step)
    return spec.model_copy(update=stages) if changed else spec


def _lexicon_path(given: str, root: Path | None, *, where: str) -> str:
    if root is None:
        return str(Path(given).resolve())
    base = root.resolve()
    path = (base / given).resolve()
    if not path.is_relative_to(base):
        raise InvalidRequestError(
            f"{where}: lexicon files are read from the tenant's lexicon directory only "
            "(INHOUSE_FLOWS__LEXICON_DIR/TENANT); give a path inside it",
            param=where,
        )
    return str(path)


def _hides_ai_label(spec: FlowSpec) -> bool:
    labels = [step for step in spec.post if step.type == "label"]
    return any(step.options.get("visible") is False for step in labels)


def _tenant_id(session: Session, tenant_name: str) -> str:
    tenant_id = session.scalar(select(TenantRow.id).where(TenantRow.name == tenant_name))
    if tenant_id is None:
        raise NotFoundError(f"tenant {tenant_name!r} does not exist", param="tenant")
    return tenant_id
