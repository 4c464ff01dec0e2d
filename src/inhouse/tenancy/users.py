"""People who log in: password (Argon2id) and TOTP, lockout, short-lived sessions.

API keys are for programs; users are for people at the console and the admin API.
A login needs the password *and* a current TOTP code that was never used before; a
run of failed logins locks the account for a while. A login yields a session token
(``ihs_…``), valid for ``auth.session_ttl_seconds``, revocable at any time, stored
only as a keyed hash like API keys. Every login, failed or not, is in the audit chain.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from inhouse.config import AuthSettings
from inhouse.errors import (
    AuthenticationError,
    ConflictError,
    InhouseError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
)
from inhouse.security.api_keys import ApiKeyHasher, new_id
from inhouse.security.audit import AuditEvent, AuditLog
from inhouse.security.keyring import Keyring
from inhouse.security.login_throttle import FailureAudit
from inhouse.security.passwords import hash_password, verify_password
from inhouse.security.sealed_columns import user_totp_context
from inhouse.security.totp import matching_step, new_totp_secret, provisioning_uri
from inhouse.store.db import Database
from inhouse.store.tables import SessionRow, TenantRow, UserRow, as_utc, utcnow
from inhouse.tenancy.models import Principal, Role
from inhouse.tenancy.service import TenantService, revoke_keys_made_by

SESSION_PREFIX = "ihs_"
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
_SESSION_SHAPE = re.compile(r"^ihs_[A-Za-z0-9_-]{43}$")
_LOGIN_FAILED = "Incorrect username, password or one-time code."


def looks_like_session_token(token: str) -> bool:
    return bool(_SESSION_SHAPE.match(token))


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: str
    tenant_id: str
    username: str
    tenant_name: str
    role: Role
    created_at: datetime
    locked_until: datetime | None
    disabled: bool

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and as_utc(self.locked_until) > now


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What a new user (or one whose MFA was reset) needs once: shown, never stored plain."""

    user: UserInfo
    totp_secret: str
    totp_uri: str


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str
    session_id: str
    expires_at: datetime
    user: UserInfo


class UserService:
    def __init__(
        self,
        db: Database,
        hasher: ApiKeyHasher,
        keyring: Keyring,
        audit: AuditLog,
        settings: AuthSettings,
        tenants: TenantService,
    ) -> None:
        self._db = db
        self._tenants = tenants
        self._hasher = hasher
        self._keyring = keyring
        self._audit = audit
        self._settings = settings
        self._failure_audit = FailureAudit(
            settings.failed_login_audits_per_minute, settings.failed_login_audits_overall
        )

    # -- administration -----------------------------------------------------------------

    def create_user(
        self, tenant_name: str, username: str, role: Role, password: str, *, actor: str
    ) -> Enrolment:
        if not USERNAME.match(username):
            raise InvalidRequestError(
                f"invalid username {username!r}: 1-64 lowercase letters, digits, '.', '_', "
                "'@' or '-'",
                param="username",
            )
        password_hash = hash_password(password)
        secret = new_totp_secret()

        def create(session: Session) -> tuple[UserInfo, AuditEvent]:
            tenant = session.scalar(select(TenantRow).where(TenantRow.name == tenant_name))
            if tenant is None:
                raise NotFoundError(f"tenant {tenant_name!r} does not exist", param="tenant")
            if role is Role.PLATFORM_ADMIN and not tenant.is_platform:
                raise InvalidRequestError(
                    "the platform-admin role exists only in the platform tenant", param="role"
                )
            taken = session.scalar(select(UserRow.id).where(UserRow.username == username))
            if taken is not None:
                raise ConflictError(f"user {username!r} already exists", param="username")
            row = UserRow(
                id=new_id("usr"),
                tenant_id=tenant.id,
                username=username,
                role=role.value,
                password_hash=password_hash,
                totp_secret_sealed="",
                totp_last_step=0,
                failed_logins=0,
                created_at=utcnow(),
            )
            row.totp_secret_sealed = self._keyring.encrypt(secret, user_totp_context(row.id))
            session.add(row)
            info = self._info(row, tenant.name)
            return info, _user_event(actor, "user.create", info, "ok", role=role.value)

        info = self._audit.audited(create)
        return Enrolment(info, secret, provisioning_uri(secret, username))

    def list_users(self, tenant_name: str | None = None) -> list[UserInfo]:
        query = select(UserRow, TenantRow.name).join(TenantRow).order_by(UserRow.created_at)
        if tenant_name is not None:
            query = query.where(TenantRow.name == tenant_name)
        with self._db.session() as session:
            return [self._info(row, name) for row, name in session.execute(query).all()]

    def reset_mfa(self, username: str, *, actor: str, keep_keys: bool = False) -> Enrolment:
        """A new TOTP secret (a lost phone). The person's sessions end, and the keys they
        made are revoked (whoever reset their MFA may hold them) unless ``keep_keys``."""
        secret = new_totp_secret()

        def reset(session: Session, row: UserRow) -> None:
            row.totp_secret_sealed = self._keyring.encrypt(secret, user_totp_context(row.id))
            row.totp_last_step = 0

        info = self._credential_change(
            username, "user.reset_mfa", reset, actor=actor, keep_keys=keep_keys
        )
        return Enrolment(info, secret, provisioning_uri(secret, username))

    def set_password(
        self, username: str, password: str, *, actor: str, keep_keys: bool = False
    ) -> None:
        """A new password. The person's sessions end, and the keys they made are revoked
        unless ``keep_keys``."""
        password_hash = hash_password(password)

        def change(session: Session, row: UserRow) -> None:
            row.password_hash = password_hash

        self._credential_change(username, "user.password", change, actor=actor, keep_keys=keep_keys)

    def unlock(self, username: str, *, actor: str) -> None:
        def unlock(session: Session) -> tuple[None, AuditEvent]:
            row, tenant_name = self._find(session, username)
            row.locked_until = None
            row.failed_logins = 0
            return None, _user_event(actor, "user.unlock", self._info(row, tenant_name), "ok")

        self._audit.audited(unlock)

    def disable(self, username: str, *, actor: str) -> None:
        def disable(session: Session, row: UserRow) -> None:
            row.disabled_at = row.disabled_at or utcnow()

        self._credential_change(username, "user.disable", disable, actor=actor, keep_keys=False)

    def revoke_sessions(self, username: str, *, actor: str) -> int:
        def revoke(session: Session) -> tuple[int, AuditEvent | None]:
            row, tenant_name = self._find(session, username)
            count = _end_sessions(session, row.id)
            info = self._info(row, tenant_name)
            event = _user_event(actor, "session.revoke", info, "ok", sessions=count)
            return count, event if count else None

        return self._audit.audited(revoke)

    def _credential_change(
        self,
        username: str,
        action: str,
        change: Callable[[Session, UserRow], None],
        *,
        actor: str,
        keep_keys: bool,
    ) -> UserInfo:
        """A change to how a person proves who they are, in one audited transaction: the
        change, their sessions ended, and the keys they made revoked (unless kept)."""

        def apply(session: Session) -> tuple[UserInfo, AuditEvent]:
            row, tenant_name = self._find(session, username)
            change(session, row)
            sessions = _end_sessions(session, row.id)
            keys = 0 if keep_keys else revoke_keys_made_by(session, row.id)
            info = self._info(row, tenant_name)
            details: dict[str, object] = {"sessions_ended": sessions, "keys_revoked": keys}
            if keep_keys:
                details["keys_kept"] = True  # an admin's explicit choice, on the record
            return info, _user_event(actor, action, info, "ok", **details)

        return self._audit.audited(apply)

    # -- logging in and out -------------------------------------------------------------

    def login(
        self, username: str, password: str, code: str, *, now: datetime | None = None
    ) -> NewSession:
        """A session for the right password and a fresh TOTP code; every try is audited."""
        outcome = self._try_login(username, password, code, now or utcnow())
        event = outcome.event
        if outcome.error is None:
            self._audit.record(event)
        else:
            # A flood of failures is audited at a bounded rate; what was held back is
            # counted in the next entry (the lockout counts every failure regardless).
            write, held_back = self._failure_audit.admit(username[:64])
            if write:
                if held_back:
                    event = replace(event, details={**event.details, "held_back": held_back})
                self._audit.record(event)
            raise outcome.error
        assert outcome.session is not None
        return outcome.session

    def _try_login(self, username: str, password: str, code: str, now: datetime) -> _Outcome:
        with self._db.session() as session:
            found = session.execute(
                select(UserRow, TenantRow.name).join(TenantRow).where(UserRow.username == username)
            ).first()
            row = found[0] if found is not None else None
            password_ok = verify_password(row.password_hash if row else None, password)
            if found is None or row is None or row.disabled_at is not None:
                return _Outcome.denied(
                    AuditEvent(
                        f"login:{username[:64]}",
                        "auth.login",
                        outcome="denied",
                        details={"reason": "unknown or disabled user"},
                    )
                )
            info = self._info(row, found[1])
            if row.locked_until is not None and as_utc(row.locked_until) > now:
                wait = (as_utc(row.locked_until) - now).total_seconds()
                return _Outcome.denied(
                    _user_event(row.id, "auth.login", info, "denied", reason="locked"),
                    RateLimitError(
                        f"Too many failed logins: this account is locked for {wait:.0f} more "
                        "seconds.",
                        retry_after_seconds=wait,
                        code="account_locked",
                    ),
                )
            secret = self._keyring.decrypt_text(row.totp_secret_sealed, user_totp_context(row.id))
            step = matching_step(secret, code, now.timestamp())
            # Only a right password spends the code: a typo in it does not cost a new one.
            fresh = password_ok and step is not None and _claim_step(session, row.id, step, now)
            if not (password_ok and fresh):
                if not password_ok:
                    reason = "password"
                elif step is not None:
                    reason = "replayed one-time code"
                else:
                    reason = "one-time code"
                locked = self._count_failure(session, row, now)
                return _Outcome.denied(
                    _user_event(row.id, "auth.login", info, "denied", reason=reason, locked=locked)
                )
            row.failed_logins = 0
            row.locked_until = None
            token = SESSION_PREFIX + secrets.token_urlsafe(32)
            login = SessionRow(
                id=new_id("ses"),
                user_id=row.id,
                token_hash=self._hasher.hash(token),
                created_at=now,
                expires_at=now + timedelta(seconds=self._settings.session_ttl_seconds),
            )
            session.add(login)
        return _Outcome(
            _user_event(row.id, "auth.login", info, "ok", session=login.id),
            session=NewSession(token, login.id, login.expires_at, info),
        )

    def logout(self, principal: Principal) -> None:
        if principal.session_id is None:
            raise InvalidRequestError("this credential is an API key, not a login session")
        with self._db.session() as session:
            session.execute(
                update(SessionRow)
                .where(SessionRow.id == principal.session_id, SessionRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        self._audit.record(
            AuditEvent(
                principal.key_id, "auth.logout", principal.tenant_id, target=principal.session_id
            )
        )

    def principal_for_session(self, token: str, *, now: datetime | None = None) -> Principal | None:
        now = now or utcnow()
        with self._db.session() as session:
            found = session.execute(
                select(SessionRow, UserRow, TenantRow)
                .join(UserRow, SessionRow.user_id == UserRow.id)
                .join(TenantRow, UserRow.tenant_id == TenantRow.id)
                .where(
                    SessionRow.token_hash == self._hasher.hash(token),
                    SessionRow.revoked_at.is_(None),
                    UserRow.disabled_at.is_(None),
                )
            ).first()
        if found is None:
            return None
        login, user, tenant = found
        expires_at = as_utc(login.expires_at)
        if expires_at <= now:
            return None
        return Principal(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            key_id=user.id,
            role=Role(user.role),
            platform=tenant.is_platform,
            session_id=login.id,
            expires_at=expires_at,
        )

    # -- inside -------------------------------------------------------------------------

    def _count_failure(self, session: Session, row: UserRow, now: datetime) -> bool:
        """Count a failed login; lock the account at the limit. True if it locked now."""
        session.execute(
            update(UserRow)
            .where(UserRow.id == row.id)
            .values(failed_logins=UserRow.failed_logins + 1)
        )
        session.refresh(row)
        if row.failed_logins < self._settings.max_failed_logins:
            return False
        row.failed_logins = 0
        row.locked_until = now + timedelta(seconds=self._settings.lockout_seconds)
        return True

    @staticmethod
    def _find(session: Session, username: str) -> tuple[UserRow, str]:
        found = session.execute(
            select(UserRow, TenantRow.name).join(TenantRow).where(UserRow.username == username)
        ).first()
        if found is None:
            raise NotFoundError(f"user {username!r} does not exist", param="username")
        return found[0], found[1]

    @staticmethod
    def _info(row: UserRow, tenant_name: str) -> UserInfo:
        return UserInfo(
            id=row.id,
            tenant_id=row.tenant_id,
            username=row.username,
            tenant_name=tenant_name,
            role=Role(row.role),
            created_at=row.created_at,
            locked_until=row.locked_until,
            disabled=row.disabled_at is not None,
        )


def _end_sessions(session: Session, user_id: str) -> int:
    result = session.execute(
        update(SessionRow)
        .where(SessionRow.user_id == user_id, SessionRow.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _user_event(
    actor: str, action: str, user: UserInfo, outcome: str, **details: object
) -> AuditEvent:
    return AuditEvent(
        actor,
        action,
        user.tenant_id,
        target=f"user:{user.username}",
        outcome=outcome,
        details=dict(details),
    )


def _claim_step(session: Session, user_id: str, step: int, now: datetime) -> bool:
    """Accept a TOTP step at most once, even for two logins racing with one code, and
    never while the account is locked (a lock set by a login running beside this one)."""
    result = session.execute(
        update(UserRow)
        .where(
            UserRow.id == user_id,
            UserRow.totp_last_step < step,
            or_(UserRow.locked_until.is_(None), UserRow.locked_until <= now),
            UserRow.disabled_at.is_(None),
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)  # the database decides, not Python
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _Outcome:
    event: AuditEvent
    error: InhouseError | None = None
    session: NewSession | None = None

    @staticmethod
    def denied(event: AuditEvent, error: InhouseError | None = None) -> _Outcome:
        return _Outcome(
            event, error or AuthenticationError(_LOGIN_FAILED, code="invalid_credentials")
        )
