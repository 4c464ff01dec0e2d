"""All configuration, read once from the environment and an optional YAML file.

Environment variables are prefixed ``INHOUSE_``; nested sections use a double
underscore (``INHOUSE_ENGINE__MAX_CONCURRENT_GENERATIONS=2``). A YAML file named by
``INHOUSE_CONFIG_FILE`` supplies defaults that the environment overrides. Nothing
else in the package reads the environment, except the model registry, which reads
the upstream API key variable an operator named for a model.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from inhouse.errors import ConfigurationError

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "password", "default"})
MIN_SECRET_LENGTH = 32
MIN_NODE_TOKEN_LENGTH = 16


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, description="all request header lines together; 431 above"
    )
    max_messages: int = Field(
        default=2048, ge=1, description="messages of one chat request; 413 above"
    )
    max_json_values: int = Field(
        default=10_000,
        ge=100,
        description="objects, arrays and list items of one inference body, counted before "
        "it is parsed; 413 above (long text is one value, however long)",
    )
    max_prompt_characters: int = Field(
        default=2_000_000, ge=1, description="characters of text in one request's prompt; 413"
    )


class Precision(StrEnum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    INT8 = "int8"


class EngineSettings(BaseModel):
    """The local (in-process) engine: continuous batching over one running batch."""

    dtype: Precision = Precision.FLOAT32
    max_running_sequences: int = Field(default=32, ge=1)
    max_tokens_in_flight: int | None = Field(
        default=None,
        ge=256,
        description="KV-cache token slots of the running batch; default: sized to a fifth "
        "of the memory available when the model loads",
    )
    max_waiting_requests: int = Field(default=256, ge=0)
    max_prefill_tokens_per_step: int = Field(default=2048, ge=1)
    default_max_tokens: int = Field(default=256, ge=1)
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads")


class CipherAlgorithm(StrEnum):
    """Authenticated encryption of records at rest."""

    SM4_GCM = "sm4-gcm"
    AES_256_GCM = "aes-256-gcm"

    @property
    def key_bytes(self) -> int:
        return 16 if self is CipherAlgorithm.SM4_GCM else 32


class QuotaFailureMode(StrEnum):
    """What admission does while Redis is unreachable."""

    CLOSED = "closed"
    OPEN = "open"


class GatewaySettings(BaseModel):
    """The request path: caches, upstream connections."""

    auth_cache_seconds: float = Field(default=2.0, ge=0.0)
    registry_refresh_seconds: float = Field(default=2.0, gt=0.0)
    upstream_connect_timeout_seconds: float = Field(default=10.0, gt=0.0)
    upstream_read_timeout_seconds: float = Field(default=300.0, gt=0.0)
    upstream_pool_size: int = Field(default=512, ge=1)
    upstream_ca_file: Path | None = Field(
        default=None,
        description="CA bundle that https upstreams (nodes) are verified with; default: "
        "the system's",
    )
    upstream_client_cert_file: Path | None = Field(
        default=None,
        description="certificate (PEM, chain first) the gateway presents to https upstreams: "
        "mutual TLS with nodes",
    )
    upstream_client_key_file: Path | None = Field(
        default=None, description="the private key of upstream_client_cert_file"
    )
    quota_cache_seconds: float = Field(
        default=2.0, ge=0.0, description="how long a tenant's quotas are cached per replica"
    )
    secret_variables: list[str] = Field(
        default_factory=list,
        description="environment variables, besides INHOUSE_UPSTREAM_* and "
        "INHOUSE_NODE_TOKEN*, that a model entry or a node may name as its key or token",
    )
    quota_failure_mode: QuotaFailureMode = QuotaFailureMode.CLOSED
    default_max_tokens: int = Field(
        default=4096,
        ge=1,
        description="max_tokens given to a remote model when a caller with a token quota "
        "sends none, so that its reservation bounds what it can use",
    )


class MeteringSettings(BaseModel):
    flush_interval_seconds: float = Field(default=0.5, gt=0.0)
    batch_size: int = Field(default=500, ge=1)
    fsync: bool = Field(
        default=False,
        description="fsync the usage journal on every record: survives power loss, not "
        "only a killed process, at the cost of a disk flush per request",
    )


class CryptoSettings(BaseModel):
    """Encryption at rest: data keys (SM4-GCM by default) wrapped by a master key."""

    algorithm: CipherAlgorithm = CipherAlgorithm.SM4_GCM
    key_provider: str = Field(
        default="file",
        description="'file' (master_key_file, created on first start), 'env' "
        "(INHOUSE_MASTER_KEY) or an entry point name in the inhouse.key_providers group",
    )
    master_key_file: Path | None = Field(
        default=None, description="default: master.key in the data directory"
    )
    rotation_days: float = Field(
        default=7.0,
        gt=0.0,
        le=90.0,
        description="a new data key is made when the current one is older (at most 90 days; "
        "7 in compliance mode)",
    )
    next_master_key_file: Path | None = Field(
        default=None,
        description="the master key being changed to (inhouse crypto new-master-key): data "
        "keys it wraps open with it meanwhile; default: master.key.next beside the master key",
    )
    rotation_check_seconds: float = Field(
        default=300.0, gt=0.0, description="how often a gateway checks whether rotation is due"
    )
    rewrap_after_rotation: bool = Field(
        default=True,
        description="after a scheduled rotation, re-encrypt older records in the background",
    )
    rewrap_batch_size: int = Field(default=500, ge=1, le=100_000)
    warn_days_before: float = Field(
        default=1.0, ge=0.0, description="crypto status warns this long before rotation is due"
    )


class AuthSettings(BaseModel):
    """People's logins (console, admin API): password + TOTP, lockout, sessions."""

    session_ttl_seconds: int = Field(
        default=3600, ge=1, le=86_400, description="how long a login session lasts"
    )
    max_failed_logins: int = Field(
        default=5, ge=1, le=100, description="failed logins in a row that lock an account"
    )
    lockout_seconds: int = Field(default=900, ge=1, description="how long a lock lasts")
    login_attempts_per_minute: int = Field(
        default=20, ge=1, description="per client address and gateway replica; 429 above"
    )
    login_workers: int = Field(
        default=2, ge=1, le=64, description="threads that check passwords (Argon2id)"
    )
    login_queue: int = Field(
        default=8, ge=0, description="logins that may wait for a thread; 429 beyond"
    )
    failed_login_audits_per_minute: int = Field(
        default=10, ge=1, description="audit entries of failed logins per username and minute"
    )
    failed_login_audits_overall: int = Field(
        default=300, ge=1, description="audit entries of failed logins per minute in all"
    )
    admin_requires_mfa: bool = Field(
        default=False,
        description="changes through the admin API need a login session (password + TOTP), "
        "not an API key; always on in compliance_mode",
    )


class AuditSettings(BaseModel):
    retention_days: int = Field(
        default=183,
        ge=1,
        description="entries older than this are pruned; the Cybersecurity Law asks for at "
        "least six months of logs",
    )
    inference_events: bool = Field(
        default=True,
        description="chain one entry per inference request (metadata: who, model, tokens, "
        "status; never prompts or answers)",
    )
    prune_check_seconds: float = Field(default=3600.0, gt=0.0)
    checkpoint_seconds: float = Field(
        default=60.0, gt=0.0, description="how often the chain's head is anchored outside"
    )
    checkpoint_file: Path | None = Field(
        default=None, description="the append-only checkpoint file; default: in the data dir"
    )
    checkpoint_syslog: str | None = Field(
        default=None, description="host:port of a syslog collector (UDP) for checkpoints"
    )
    checkpoint_webhook: str | None = Field(
        default=None, description="a URL each checkpoint is POSTed to (JSON)"
    )


class FlowSettings(BaseModel):
    """Flows: suspending end users whose inputs flows keep blocking (China's generative-AI
    rules), and where lexicon files may lie."""

    violations_in_a_row: int = Field(default=3, ge=1)
    violations_per_day: int = Field(default=5, ge=1)
    suspension_minutes: float = Field(default=60.0, gt=0.0)
    lexicon_dir: Path | None = Field(
        default=None,
        description="where flows applied through the admin API read lexicon files from; "
        "default: the data directory's lexicons/",
    )


class FleetSettings(BaseModel):
    """Remote nodes: how often their load is read, when one is ejected, retries."""

    poll_interval_seconds: float = Field(default=2.0, gt=0.0)
    poll_timeout_seconds: float = Field(default=2.0, gt=0.0)
    registry_refresh_seconds: float = Field(default=2.0, gt=0.0)
    failure_threshold: int = Field(
        default=3, ge=1, description="consecutive failures (requests or polls) that eject a node"
    )
    cooldown_seconds: float = Field(
        default=5.0, gt=0.0, description="how long an ejected node rests before a probe"
    )
    max_cooldown_seconds: float = Field(default=60.0, gt=0.0)
    max_attempts: int = Field(
        default=3, ge=1, description="nodes tried for one non-streaming request"
    )
    queue_timeout_seconds: float = Field(
        default=30.0, gt=0.0, description="how long a request waits for a node with room"
    )
    max_queued_requests: int = Field(default=1024, ge=1)
    self_registration: bool = Field(
        default=False,
        description="accept POST /v1/node/register from nodes holding the node token: "
        "every holder of the token may then add a node for any model name the gateway "
        "does not serve itself",
    )
    self_registration_urls: list[str] = Field(
        default_factory=list,
        description="URL prefixes a self-registering node may have; with "
        "self_registration_models set too, a node within both is routed at once, any "
        "other refused; unset: every self-registered node waits for an operator's approval",
    )
    self_registration_models: list[str] = Field(
        default_factory=list, description="model names a self-registering node may serve"
    )
    max_registered_capacity: int = Field(
        default=32, ge=1, description="the most a self-registering node may claim to run"
    )
    heartbeat_seconds: float = Field(
        default=30.0, gt=0.0, description="how often an inhouse node registers itself again"
    )
    routing: dict[str, Any] = Field(
        default_factory=dict,
        description="the routing policy's settings (edge_max_prompt_tokens, center_tasks, "
        "...; docs/fleet.md); the defaults where unset",
    )
    tenant_routing: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="tenant name → its overrides of the routing policy"
    )


class TenancySettings(BaseModel):
    """How tenants share serving capacity (docs/tenancy.md#fair-share-of-serving-capacity)."""

    max_share: float = Field(
        default=0.30,
        gt=0.0,
        le=1.0,
        description="the most of the local engine's running slots, or of a fleet model's "
        "node slots, one tenant holds while another tenant's requests wait",
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="tenant name → weight in the fair order of waiting requests (default 1)",
    )

    @model_validator(mode="after")
    def _positive_weights(self) -> TenancySettings:
        for tenant, weight in self.weights.items():
            if not 0.0 < weight < float("inf"):
                raise ValueError(f"tenancy.weights: {tenant}'s weight must be positive")
        return self


COMPLIANCE_MAX_ROTATION_DAYS = 7.0
COMPLIANCE_MIN_RETENTION_DAYS = 180


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INHOUSE_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path("./data")
    database_url: str | None = None
    models_dir: Path | None = None
    builtin_model: bool = True
    log_level: str = "info"
    secret_key: SecretStr | None = None
    node_token: SecretStr | None = None
    master_key: SecretStr | None = Field(
        default=None, description="base64 of 32 random bytes, for crypto.key_provider 'env'"
    )
    compliance_mode: bool = Field(
        default=False,
        description="refuse settings weaker than MLPS level 3 asks for (key rotation > 7 days)",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for quota counters shared by gateway replicas; in-process if unset",
    )

    server: ServerSettings = ServerSettings()
    engine: EngineSettings = EngineSettings()
    gateway: GatewaySettings = GatewaySettings()
    metering: MeteringSettings = MeteringSettings()
    crypto: CryptoSettings = CryptoSettings()
    auth: AuthSettings = AuthSettings()
    audit: AuditSettings = AuditSettings()
    flows: FlowSettings = FlowSettings()
    fleet: FleetSettings = FleetSettings()
    tenancy: TenancySettings = TenancySettings()

    @model_validator(mode="after")
    def _refuse_weak_settings_in_compliance_mode(self) -> Settings:
        if self.compliance_mode and self.crypto.rotation_days > COMPLIANCE_MAX_ROTATION_DAYS:
            raise ValueError(
                f"compliance_mode is on: crypto.rotation_days must be at most "
                f"{COMPLIANCE_MAX_ROTATION_DAYS:g} (it is {self.crypto.rotation_days:g})"
            )
        if self.compliance_mode and self.audit.retention_days < COMPLIANCE_MIN_RETENTION_DAYS:
            raise ValueError(
                f"compliance_mode is on: audit.retention_days must be at least "
                f"{COMPLIANCE_MIN_RETENTION_DAYS} (it is {self.audit.retention_days})"
            )
        return self

    @model_validator(mode="after")
    def _refuse_short_node_tokens(self) -> Settings:
        token = self.node_token.get_secret_value() if self.node_token else ""
        if token and (len(token) < MIN_NODE_TOKEN_LENGTH or token.lower() in PLACEHOLDER_SECRETS):
            raise ValueError(
                f"INHOUSE_NODE_TOKEN must be a random value of at least "
                f"{MIN_NODE_TOKEN_LENGTH} characters"
            )
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment is Environment.DEVELOPMENT:
            return self
        value = self.secret_key.get_secret_value() if self.secret_key else ""
        if value.strip().lower() in PLACEHOLDER_SECRETS or len(value) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"INHOUSE_SECRET_KEY must be set to a random value of at least "
                f"{MIN_SECRET_LENGTH} characters when environment is {self.environment.value}"
            )
        return self

    @property
    def admin_requires_mfa(self) -> bool:
        return self.auth.admin_requires_mfa or self.compliance_mode

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'inhouse.db').resolve()}"

    @property
    def resolved_lexicon_dir(self) -> Path:
        configured = self.flows.lexicon_dir
        return configured if configured is not None else self.data_dir / "lexicons"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / "admin.key"

    @property
    def audit_checkpoint_file(self) -> Path:
        configured = self.audit.checkpoint_file
        return configured if configured is not None else self.data_dir / "audit-checkpoints.jsonl"

    @property
    def usage_journal_dir(self) -> Path:
        return self.data_dir / "usage-journal"

    @property
    def master_key_file(self) -> Path:
        configured = self.crypto.master_key_file
        return configured if configured is not None else self.data_dir / "master.key"

    @property
    def next_master_key_file(self) -> Path:
        configured = self.crypto.next_master_key_file
        if configured is not None:
            return configured
        return self.master_key_file.with_name(self.master_key_file.name + ".next")

    @property
    def sqlite_directory(self) -> Path | None:
        """The directory of the SQLite database file; None on another database."""
        url = self.resolved_database_url
        if not url.startswith("sqlite:///"):
            return None
        return Path(url.removeprefix("sqlite:///")).resolve().parent

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret.key"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("INHOUSE_CONFIG_FILE")
        if config_file:
            if not Path(config_file).is_file():
                raise ConfigurationError(f"INHOUSE_CONFIG_FILE {config_file} is not a file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once, at start-up; pass the object down from there."""
    return Settings(**overrides)
