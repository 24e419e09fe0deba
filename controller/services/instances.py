"""Database side of instances: snapshots for the reconciler, specs for the runtime, state updates."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from builder.artifact import Artifact, artifact_from_dict
from builder.spaceconfig import parse_duration
from controller.db.models import Build, Instance, Space, utcnow
from controller.domain import appheaders
from controller.domain.hardware import hardware_spec
from controller.domain.lifecycle import Observed, restart_backoff
from controller.domain.naming import instance_name
from controller.runtimes.base import Accelerators, HardwareSpec, InstanceSpec
from controller.services import oauth, quotas, volumes, zerogpu
from controller.services.buildlogs import secret_masker
from controller.services.lifecycle import release_accelerators
from controller.services.platform import Platform
from controller.services.settings_vars import secret_keys, space_env
from controller.services.spaces import find_space
from controller.services.views import app_host

DEFAULT_STARTUP_TIMEOUT = 1800.0


@dataclass(frozen=True)
class InstanceRow:
    name: str
    build_id: int
    generation: int
    state: str
    endpoint: str | None
    restarts: int
    next_restart_at: datetime | None
    ready_at: datetime | None
    message: str | None


@dataclass(frozen=True)
class SpaceSnapshot:
    pk: int
    space_id: str
    owner: str
    name: str
    slug: str
    private: bool
    sdk: str | None
    desired: str
    stage: str
    error_message: str | None
    hardware: str
    current_hardware: str | None
    created_at: datetime
    generation: int
    head_sha: str | None
    target_build_id: int | None
    wanted: str | None  # the instance name that should run (target build, generation)
    health_path: str
    startup_timeout: float
    headers: tuple[tuple[str, str], ...]  # README custom_headers (controller.domain.appheaders)
    embeddable: bool  # README disable_embedding
    observed_build: tuple[bool, str | None, str | None, str | None]  # has_head, status, error_stage, error
    instances: tuple[InstanceRow, ...] = field(default=())

    def row(self, name: str) -> InstanceRow | None:
        return next((r for r in self.instances if r.name == name), None)


def _row(instance: Instance) -> InstanceRow:
    return InstanceRow(instance.name, instance.build_id, instance.generation, instance.state, instance.endpoint,
                       instance.restarts, instance.next_restart_at, instance.ready_at, instance.message)


def load_snapshots(platform: Platform, only: int | None = None) -> list[SpaceSnapshot]:
    with platform.sessions() as session:
        stmt = select(Space).options(joinedload(Space.owner))
        if only is not None:
            stmt = stmt.where(Space.id == only)
        spaces = list(session.scalars(stmt))
        ids = [s.id for s in spaces]
        instances = _by_space(session.scalars(select(Instance).where(Instance.space_id.in_(ids))) if ids else [])
        builds = _head_builds(session, spaces)
        target_ids = [s.target_build_id for s in spaces if s.target_build_id]
        targets = {b.id: b for b in session.scalars(select(Build).where(Build.id.in_(target_ids)))} if target_ids else {}
        return [_snapshot(s, builds.get(s.id), targets.get(s.target_build_id or 0), instances.get(s.id, []))
                for s in spaces]


def _by_space(rows: Any) -> dict[int, list[Instance]]:
    grouped: dict[int, list[Instance]] = {}
    for row in rows:
        grouped.setdefault(row.space_id, []).append(row)
    return grouped


def _head_builds(session: Session, spaces: list[Space]) -> dict[int, Build]:
    wanted = {(s.id, s.head_sha) for s in spaces if s.head_sha}
    ids = list({s.id for s in spaces if s.head_sha})
    if not ids:
        return {}
    rows = session.scalars(select(Build).where(Build.space_id.in_(ids)))
    return {b.space_id: b for b in rows if (b.space_id, b.commit_sha) in wanted}


def _snapshot(space: Space, head: Build | None, target_build: Build | None, instances: list[Instance]) -> SpaceSnapshot:
    target = space.target_build_id  # the newest successful build; an older one keeps serving while a push builds
    wanted = instance_name(space.owner.name, space.name, target, space.generation) if target else None
    artifact = target_build.artifact if target_build is not None and target_build.artifact else {}
    return SpaceSnapshot(
        pk=space.id, space_id=space.space_id, owner=space.owner.name, name=space.name, slug=space.slug,
        private=space.private, sdk=space.sdk, desired=space.desired, stage=space.stage,
        error_message=space.error_message, hardware=space.requested_hardware,
        current_hardware=space.current_hardware, created_at=space.created_at, generation=space.generation,
        head_sha=space.head_sha, target_build_id=space.target_build_id, wanted=wanted,
        health_path=_health_path(space, str(artifact.get("health_path", "/"))),
        startup_timeout=_startup_timeout(space),
        headers=appheaders.custom_headers(space.card_data or {}), embeddable=appheaders.embeddable(space.card_data or {}),
        observed_build=(space.head_sha is not None, head.status if head else None,
                        head.error_stage if head else None, head.error_message if head else None),
        instances=tuple(_row(i) for i in instances if i.state != "retired"),
    )


def _health_path(space: Space, path: str) -> str:
    """Streamlit serves everything under its base URL path (see app_env)."""
    return f"/apps/{space.owner.name}/{space.name}{path}" if space.sdk == "streamlit" else path


def _startup_timeout(space: Space) -> float:
    value = (space.card_data or {}).get("startup_duration_timeout")
    try:
        return float(parse_duration(value)) if value else DEFAULT_STARTUP_TIMEOUT
    except Exception:
        return DEFAULT_STARTUP_TIMEOUT


def observed(snap: SpaceSnapshot, serving: bool) -> Observed:
    has_head, status, error_stage, error = snap.observed_build
    row = snap.row(snap.wanted) if snap.wanted else None
    return Observed(desired=snap.desired, has_head=has_head, build_status=status, build_error_stage=error_stage,
                    build_error=error, serving=serving, wanted_state=row.state if row else None,
                    wanted_message=row.message if row else None)


def ensure_row(platform: Platform, space_pk: int, name: str) -> InstanceRow:
    """Get or create the instance row for the space's current target (idempotent by name)."""
    with platform.tx() as session:
        row = session.scalar(select(Instance).where(Instance.name == name))
        if row is None:
            space = session.get(Space, space_pk)
            assert space is not None and space.target_build_id is not None
            row = Instance(space_id=space_pk, build_id=space.target_build_id, generation=space.generation,
                           name=name, runtime=platform.settings.runtime, state="starting")
            session.add(row)
            session.flush()
        return _row(row)


def update_row(platform: Platform, name: str, **values: Any) -> None:
    with platform.tx() as session:
        row = session.scalar(select(Instance).where(Instance.name == name))
        if row is not None:
            if values.get("message"):
                values["message"] = _masked(session, platform, row, values["message"])
            for key, value in values.items():
                setattr(row, key, value)


def _masked(session: Session, platform: Platform, row: Instance, message: str) -> str:
    """The message with the space's secrets masked, before it is stored: it becomes the public errorMessage.
    Secrets are decrypted only here, when a message is about to be stored, never on a plain pass."""
    space = session.get(Space, row.space_id)
    return secret_masker(session, platform, space)(message) if space is not None else message


def mark_crashed(platform: Platform, name: str, message: str) -> None:
    """A ready app died: count the restart and schedule it with backoff, or give up (crash loop)."""
    with platform.tx() as session:
        row = session.scalar(select(Instance).where(Instance.name == name))
        if row is None:
            return
        row.restarts += 1
        delay = restart_backoff(row.restarts)
        row.message = message = _masked(session, platform, row, message)  # it holds the app's last log lines
        if delay is None:
            row.state = "failed"
            row.message = f"The app keeps crashing ({row.restarts - 1} restarts); fix it and push, or restart it. {message}"
        else:
            row.state = "crashed"
            row.next_restart_at = utcnow() + delay


def retire(platform: Platform, names: list[str]) -> None:
    with platform.tx() as session:
        for row in session.scalars(select(Instance).where(Instance.name.in_(names))):
            session.delete(row)


@dataclass(frozen=True)
class StageRow:
    snap: SpaceSnapshot  # what the stage was derived from
    stage: str
    message: str | None
    hardware: str | None


def write_stages(platform: Platform, rows: list[StageRow]) -> None:
    """Store derived stages, many in one transaction (a pass over thousands of spaces stays cheap).

    Each write only lands if the space still is what the stage was derived from: a push, restart or
    wake since the snapshot (or a deleted space whose id SQLite reused) leaves it to the next pass.
    """
    with platform.tx() as session:
        for row in rows:
            snap = row.snap
            session.execute(
                update(Space)
                .where(Space.id == snap.pk, Space.created_at == snap.created_at, Space.desired == snap.desired,
                       Space.generation == snap.generation, _same(Space.head_sha, snap.head_sha),
                       _same(Space.target_build_id, snap.target_build_id))
                .values(stage=row.stage, error_message=row.message, current_hardware=row.hardware)
            )


def _same(column: Any, value: object) -> Any:
    return column.is_(None) if value is None else column == value


def release(platform: Platform, space_pk: int) -> None:
    with platform.tx() as session:
        space = session.get(Space, space_pk)
        if space is not None:
            release_accelerators(session, space)


def instance_spec(platform: Platform, space_pk: int, name: str) -> InstanceSpec:
    """Everything the runtime needs; allocates the flavor's accelerators (may raise quota/capacity errors)."""
    with platform.tx() as session:
        space = session.get(Space, space_pk)
        row = session.scalar(select(Instance).where(Instance.name == name))
        assert space is not None and row is not None
        build = session.get(Build, row.build_id)
        assert build is not None and build.artifact is not None
        accel, devices = quotas.ensure_allocation(session, platform, space)
        flavor = quotas.flavor(platform, space.requested_hardware)
        res = hardware_spec(flavor, devices)
        hardware = HardwareSpec(flavor=res.flavor, cpu=res.cpu, memory_mb=res.memory_mb, pids=res.pids,
                                disk_mb=res.disk_mb, accelerators=Accelerators(accel, devices) if accel else None)
        env = app_env(session, platform, space, hardware)
        env = zerogpu.with_zero_env(platform, space.requested_hardware, name, env)  # ZeroGPU (issue 15)
        artifact: Artifact = artifact_from_dict(build.artifact)
        labels = {"spaceport.space": space.space_id, "spaceport.build": str(build.id)}
        return InstanceSpec(name=name, space_id=space.space_id, artifact=artifact, env=env, hardware=hardware, labels=labels,
                            secret_keys=frozenset(secret_keys(session, space)),
                            mounts=volumes.instance_mounts(session, platform, space))  # /data, volumes (issue 16)


def app_env(session: Session, platform: Platform, space: Space, hardware: HardwareSpec) -> dict[str, str]:
    """The HF Spaces environment, then variables, then secrets (secrets win, like HF)."""
    host = app_host(platform.settings, space).split("://", 1)[1]
    base = f"/apps/{space.owner.name}/{space.name}"
    env = {
        "SPACE_ID": space.space_id,
        "SPACE_HOST": host,
        "SPACE_AUTHOR_NAME": space.owner.name,
        "SPACE_REPO_NAME": space.name,
        "SPACE_TITLE": str((space.card_data or {}).get("title") or space.name),
        "CPU_CORES": f"{hardware.cpu:g}",
        "MEMORY": f"{hardware.memory_mb // 1024}Gi",
        "ACCELERATOR": hardware.accelerators.type if hardware.accelerators else "none",
        "GRADIO_ROOT_PATH": base,  # Gradio only builds public URLs from it; the proxy strips the prefix
    }
    if space.sdk == "streamlit":  # Streamlit mounts its routes under the prefix; the proxy keeps it
        env["STREAMLIT_SERVER_BASE_URL_PATH"] = base.strip("/")
    env.update(oauth.oauth_env(session, platform, space))  # hf_oauth: true (sign-in for apps)
    variables, secrets = space_env(session, platform, space)
    return {**env, **variables, **secrets}


def record_activity(platform: Platform, seen: dict[str, float]) -> None:
    """Persist the proxy's last-seen times (epoch seconds) as Space.last_activity_at."""
    with platform.tx() as session:
        for space_id, ts in seen.items():
            owner, _, name = space_id.partition("/")
            space = find_space(session, owner, name)
            if space is not None:
                space.last_activity_at = datetime.fromtimestamp(ts, UTC)


def set_desired(platform: Platform, space_id: str, desired: str, only_from: tuple[str, ...]) -> int | None:
    """Move desired state (e.g. wake: sleeping/frozen -> running); return the space pk."""
    owner, _, name = space_id.partition("/")
    with platform.tx() as session:
        space = find_space(session, owner, name)
        if space is None:
            return None
        if space.desired in only_from:
            space.desired = desired
            space.last_activity_at = utcnow()
        return space.id


def log_instance(session: Session, space: Space) -> str | None:
    """Which instance's output to show: the ready one, else the most recently started."""
    rows = list(session.scalars(select(Instance).where(Instance.space_id == space.id, Instance.state != "retired")
                                .order_by(Instance.started_at.desc(), Instance.id.desc())))
    ready = [r for r in rows if r.state == "ready"]
    chosen = ready or rows
    return chosen[0].name if chosen else None
