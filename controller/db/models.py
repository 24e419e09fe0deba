"""SQLAlchemy 2 typed models. The database holds desired state; runtimes report actual state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Account(Base):
    """A namespace owner: a user or an organization (one namespace for both, like HF)."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(96), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # "user" | "org"
    fullname: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(254), default=None)
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default="write")


class Token(Base):
    """An access token; only its SHA-256 is stored."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    scope: Mapped[str] = mapped_column(String(8))  # "read" | "write"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    user: Mapped[Account] = relationship()


class WebSession(Base):
    """A browser login: the cookie carries a random id, only its SHA-256 is stored; logout deletes the row."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Space(Base):
    __tablename__ = "spaces"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        Index("ix_spaces_updated", "updated_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(96))
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    sdk: Mapped[str | None] = mapped_column(String(16), default=None)
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    duplicated_from: Mapped[str | None] = mapped_column(String(200), default=None)
    requested_hardware: Mapped[str] = mapped_column(String(32), default="cpu-basic")
    current_hardware: Mapped[str | None] = mapped_column(String(32), default=None)
    sleep_time: Mapped[int | None] = mapped_column(Integer, default=None)  # seconds; -1 never; None default
    head_sha: Mapped[str | None] = mapped_column(String(40), default=None)
    card_data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Desired state: "running" | "paused" | "sleeping" | "stopped"; actual stage is derived and stored.
    desired: Mapped[str] = mapped_column(String(16), default="running")
    stage: Mapped[str] = mapped_column(String(24), default="NO_APP_FILE", index=True)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    target_build_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # Bumped by restart, config (variables/secrets) and hardware changes: a new instance replaces the old.
    generation: Mapped[int] = mapped_column(Integer, default=1)
    last_activity_at: Mapped[datetime | None] = mapped_column(default=None)
    # Persistent storage at /data (controller.services.volumes): its tier and the directory key (random,
    # so a reused id or a rename never reaches another space's data); read-only volumes as the API shows them.
    storage_tier: Mapped[str | None] = mapped_column(String(16), default=None)
    storage_key: Mapped[str | None] = mapped_column(String(32), default=None)
    volumes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    owner: Mapped[Account] = relationship()

    @property
    def space_id(self) -> str:
        return f"{self.owner.name}/{self.name}"


class Build(Base):
    """A build of one commit of one space; (space, commit) identifies it."""

    __tablename__ = "builds"
    __table_args__ = (UniqueConstraint("space_id", "commit_sha"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    commit_sha: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    # queued | running | succeeded | failed | cancelled
    error_stage: Mapped[str | None] = mapped_column(String(24), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    artifact: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    no_cache: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(100), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class BuildLogLine(Base):
    __tablename__ = "build_log_lines"
    __table_args__ = (Index("ix_build_log_build_seq", "build_id", "seq"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    text: Mapped[str] = mapped_column(Text)


class Instance(Base):
    """A build's artifact running (or kept stopped) on a runtime."""

    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    runtime: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="starting")
    # starting | ready | frozen | stopped | failed | retired
    endpoint: Mapped[str | None] = mapped_column(String(200), default=None)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None] = mapped_column(default=None)
    next_restart_at: Mapped[datetime | None] = mapped_column(default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)


class Variable(Base):
    __tablename__ = "variables"
    __table_args__ = (UniqueConstraint("space_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Secret(Base):
    """Write-only: encrypted with the platform key, never returned."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("space_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(200))
    ciphertext: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Quota(Base):
    """The most devices of one accelerator type an owner may hold at once."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("owner_id", "accelerator"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    accelerator: Mapped[str] = mapped_column(String(32))
    limit: Mapped[int] = mapped_column(Integer)


class AcceleratorDevice(Base):
    """Inventory: one device; space_id set while a space holds it."""

    __tablename__ = "accelerator_devices"
    __table_args__ = (UniqueConstraint("accelerator", "device_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    accelerator: Mapped[str] = mapped_column(String(32), index=True)
    device_id: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(100), default="local")
    space_id: Mapped[int | None] = mapped_column(ForeignKey("spaces.id", ondelete="SET NULL"), default=None)
    allocated_at: Mapped[datetime | None] = mapped_column(default=None)


class PlatformSetting(Base):
    """Admin-set platform defaults (sleep times per flavor, default quotas), JSON values."""

    __tablename__ = "platform_settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


# ---- ZeroGPU (issue 15): per-call GPU leases, GPU-second quotas -------------------------------------


class ZeroGpuDevice(Base):
    """A GPU of a ZeroGPU pool (shared per call), declared by the admin; never in accelerator_devices."""

    __tablename__ = "zerogpu_devices"
    __table_args__ = (UniqueConstraint("accelerator", "device_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    accelerator: Mapped[str] = mapped_column(String(32), index=True)
    device_index: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str] = mapped_column(String(100), unique=True)
    node: Mapped[str] = mapped_column(String(100), default="local")


class ZeroGpuQuota(Base):
    """An admin's override: GPU seconds per day for a user, or for every member of an organization."""

    __tablename__ = "zerogpu_quotas"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), unique=True)
    seconds_per_day: Mapped[int] = mapped_column(Integer)


class ZeroGpuLease(Base):
    """One granted call: who paid, on which device, for how long it was asked and how long it was used."""

    __tablename__ = "zerogpu_leases"
    __table_args__ = (Index("ix_zerogpu_leases_subject_released", "subject", "released_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    space_id: Mapped[int | None] = mapped_column(ForeignKey("spaces.id", ondelete="SET NULL"), default=None, index=True)
    instance: Mapped[str] = mapped_column(String(120))
    device_uuid: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"), default=None)
    duration: Mapped[int] = mapped_column(Integer)
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    allowed_at: Mapped[datetime | None] = mapped_column(default=None)
    released_at: Mapped[datetime | None] = mapped_column(default=None)
    pid: Mapped[int | None] = mapped_column(Integer, default=None)
    charged_seconds: Mapped[float] = mapped_column(default=0.0)
    outcome: Mapped[str] = mapped_column(String(16), default="granted")  # granted|released|failed|expired|stopped


# ---- Sign-in for apps (issue 16): Spaceport as an OpenID Connect provider for hf_oauth spaces --------


class OAuthClient(Base):
    """The OAuth client of one space that sets hf_oauth: the secret is encrypted (the app gets it in clear)."""

    __tablename__ = "oauth_clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    space: Mapped[Space] = relationship()


class OAuthCode(Base):
    """An authorization code (stored hashed): one use, minutes long, bound to client, redirect and PKCE."""

    __tablename__ = "oauth_codes"
    id: Mapped[int] = mapped_column(primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(400))
    nonce: Mapped[str | None] = mapped_column(String(400), default=None)
    code_challenge: Mapped[str | None] = mapped_column(String(200), default=None)
    code_challenge_method: Mapped[str | None] = mapped_column(String(10), default=None)
    expires_at: Mapped[datetime] = mapped_column()
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OAuthAccessToken(Base):
    """An access token an app received for a user (stored hashed), with its OAuth scopes and expiry."""

    __tablename__ = "oauth_access_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True)
    code_pk: Mapped[int | None] = mapped_column(ForeignKey("oauth_codes.id", ondelete="CASCADE"), default=None, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(400))
    expires_at: Mapped[datetime] = mapped_column()
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    user: Mapped[Account] = relationship()
