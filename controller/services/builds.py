"""Builds: a push records one (space, commit) build; a worker runs it with the builder."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from builder import build as builder
from builder.artifact import artifact_to_dict
from builder.baseimages import parse_aliases
from builder.errors import BuildFailure
from builder.pythons import PythonSource
from builder.spaceconfig import parse_front_matter
from builder.venv import VenvPolicy
from controller.config import Settings
from controller.db.models import Build, Space, utcnow
from controller.domain.naming import image_ref
from controller.domain.stages import SERVING, Stage
from controller.git import storage
from controller.runtimes.buildahbox import open_buildah
from controller.runtimes.buildbox import build_isolation
from controller.runtimes.factory import docker_client
from controller.services.buildlogs import BuildLogWriter
from controller.services.platform import Platform
from controller.services.settings_vars import space_env

log = logging.getLogger(__name__)
ACTIVE = ("queued", "running")
MAX_ATTEMPTS = 3
HEARTBEAT = timedelta(seconds=10)
STALE = timedelta(seconds=60)

Enqueue = Callable[[int], None]


def refresh_card(space: Space, repo: Path, sha: str) -> None:
    """cardData and sdk from README.md front matter at the commit (bad YAML is the builder's error)."""
    readme = storage.read_file(repo, sha, "README.md")
    try:
        card = parse_front_matter(readme.decode(errors="replace")) if readme else {}
    except Exception:
        card = {}
    space.card_data = card if isinstance(card, dict) else {}
    sdk = space.card_data.get("sdk")
    if isinstance(sdk, str) and sdk in ("gradio", "streamlit", "docker", "static"):
        space.sdk = sdk


def record_push(session: Session, space: Space, repo: Path, sha: str, *, no_cache: bool = False) -> Build:
    """A new head on main: record its build (idempotent per commit), cancel older ones, set the stage."""
    space.head_sha = sha
    space.updated_at = utcnow()
    refresh_card(space, repo, sha)
    cancel_active(session, space, except_sha=sha)
    build = session.scalar(select(Build).where(Build.space_id == space.id, Build.commit_sha == sha))
    if build is None:
        build = Build(space_id=space.id, commit_sha=sha, no_cache=no_cache)
        session.add(build)
    elif build.status not in ACTIVE:
        _requeue(build, no_cache)
    session.flush()
    space.stage = (Stage.RUNNING_BUILDING if Stage(space.stage) in SERVING else Stage.BUILDING).value
    space.error_message = None
    if space.desired in ("stopped", "sleeping"):
        space.desired = "running"
    return build


def rebuild(session: Session, space: Space, *, no_cache: bool) -> Build | None:
    """Factory rebuild: build the head again (without cache when asked)."""
    if space.head_sha is None:
        return None
    build = session.scalar(select(Build).where(Build.space_id == space.id, Build.commit_sha == space.head_sha))
    if build is None:
        build = Build(space_id=space.id, commit_sha=space.head_sha, no_cache=no_cache)
        session.add(build)
    else:
        _requeue(build, no_cache)
    session.flush()
    space.stage = (Stage.RUNNING_BUILDING if Stage(space.stage) in SERVING else Stage.BUILDING).value
    space.desired = "running"
    return build


def _requeue(build: Build, no_cache: bool) -> None:
    build.status = "queued"
    build.no_cache = no_cache
    build.error_stage = build.error_message = None  # the old artifact stays until a new one replaces it
    build.attempts = 0
    build.created_at = utcnow()
    build.started_at = build.finished_at = None


def cancel_active(session: Session, space: Space, except_sha: str | None = None) -> None:
    stmt = select(Build).where(Build.space_id == space.id, Build.status.in_(ACTIVE))
    for build in session.scalars(stmt):
        if build.commit_sha != except_sha:
            build.status = "cancelled"
            build.finished_at = utcnow()
            build.error_message = "Superseded by a newer push."


def latest_build(session: Session, space: Space) -> Build | None:
    stmt = select(Build).where(Build.space_id == space.id).order_by(Build.created_at.desc(), Build.id.desc())
    return session.scalar(stmt.limit(1))


def claim(session: Session, build_id: int, worker: str) -> Build | None:
    """Atomically move a queued build to running; None if someone else has it or it was cancelled."""
    now = utcnow()
    result = session.execute(
        update(Build).where(Build.id == build_id, Build.status == "queued")
        .values(status="running", worker=worker, started_at=now, heartbeat_at=now, attempts=Build.attempts + 1)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Build, build_id)


def stale_builds(session: Session, stale_after: timedelta = STALE) -> list[Build]:
    """Running builds whose worker stopped heartbeating: lost to a crash."""
    cutoff = utcnow() - stale_after
    stmt = select(Build).where(Build.status == "running", Build.heartbeat_at < cutoff)
    return list(session.scalars(stmt))


def recover_lost(session: Session, stale_after: timedelta = STALE) -> list[int]:
    """Retry builds a dead worker held (or fail them with a reason after MAX_ATTEMPTS); return ids to enqueue."""
    retry: list[int] = []
    for build in stale_builds(session, stale_after):
        if build.attempts >= MAX_ATTEMPTS:
            _fail(session, build, Stage.BUILD_ERROR, f"The build worker was lost {build.attempts} times; giving up. Push again or factory-rebuild.")
        else:
            build.status = "queued"
            retry.append(build.id)
    return retry


def queued_ids(session: Session, older_than: timedelta = timedelta(minutes=2)) -> list[int]:
    """Builds queued for a while: their message may have been lost with a worker; re-sending is safe."""
    cutoff = utcnow() - older_than
    stmt = select(Build.id).where(Build.status == "queued", Build.created_at < cutoff).order_by(Build.id)
    return list(session.scalars(stmt))


def _fail(session: Session, build: Build, stage: Stage, message: str) -> None:
    build.status = "failed"
    build.error_stage = stage.value
    build.error_message = message
    build.finished_at = utcnow()
    space = session.get(Space, build.space_id)
    if space is None or space.head_sha != build.commit_sha:
        return
    if Stage(space.stage) in SERVING:
        space.stage = Stage.RUNNING.value
        space.error_message = f"The build of {build.commit_sha[:12]} failed ({stage.value}); the previous version keeps running. {message}"
    else:
        space.stage = stage.value
        space.error_message = message


def _succeed(session: Session, build: Build, artifact: dict[str, object]) -> None:
    build.status = "succeeded"
    build.artifact = artifact
    build.finished_at = utcnow()
    space = session.get(Space, build.space_id)
    if space is None or space.head_sha != build.commit_sha:
        return
    if space.target_build_id == build.id:  # a rebuild of the same commit: a new instance takes the new artifact
        space.generation += 1
    space.target_build_id = build.id
    space.stage = (Stage.RUNNING_APP_STARTING if Stage(space.stage) in SERVING else Stage.APP_STARTING).value


def run_build(platform: Platform, build_id: int) -> str:
    """The build task body: claim, export, build, record. Returns the final status."""
    with platform.tx() as session:
        build = claim(session, build_id, socket.gethostname())
        if build is None:
            return "skipped"
        space = session.get(Space, build.space_id)
        assert space is not None
        owner, name, sha = space.owner.name, space.name, build.commit_sha
        build_args, secret_env = space_env(session, platform, space)  # variables become build args
        secrets = list(secret_env.values())  # only to mask them in the log
        no_cache = build.no_cache
    writer = BuildLogWriter(platform.sessions, build_id, secrets)
    return _execute(platform, build_id, owner, name, sha, build_args, no_cache, writer)


def _execute(platform: Platform, build_id: int, owner: str, name: str, sha: str,
             build_args: dict[str, str], no_cache: bool, writer: BuildLogWriter) -> str:
    settings = platform.settings
    stop = threading.Event()
    cancel = threading.Event()
    watcher = threading.Thread(target=_watch, args=(platform, build_id, writer, stop, cancel), daemon=True)
    watcher.start()
    try:
        source = _export_source(settings.artifacts_dir, settings.repos_dir, owner, name, sha)
        writer(f"Building {owner}/{name} at {sha[:12]}")
        kind: Literal["venv", "image"] = "venv" if settings.runtime == "local" else "image"
        buildah = kind == "image" and settings.image_builder == "buildah"
        client = docker_client(settings.docker_host) if kind == "image" and not buildah else None
        engine = open_buildah(settings, owner, writer) if buildah else contextlib.nullcontext(None)
        # Owner code (build backends, RUN steps) runs only inside the sandbox / the build network.
        with engine as buildah_engine, build_isolation(settings, owner, writer, kind, client) as isolation:
            artifact = builder.build(
                source, kind=kind, cache_dir=settings.artifacts_dir, log=writer, tag=image_ref(owner, name, sha, settings.registry),
                client=client, build_args=build_args, aliases=parse_aliases(settings.base_image_aliases) or None,
                mirror=settings.registry_mirror or None, ca_dir=settings.extra_ca_dir, no_cache=no_cache,
                time_limit=settings.build_time_limit, cancel=cancel, owner=owner, sandbox=isolation.sandbox,
                network=isolation.network, container_limits=isolation.container_limits,
                uv_seed=settings.build_uv_seed, venv_policy=venv_policy(settings),
                push=bool(settings.registry), engine=buildah_engine,
            )
    except BuildFailure as failure:
        stage, message = Stage(failure.stage), writer.mask(failure.message)  # stored and shown: secrets masked
        writer(f"Build failed ({stage.value}): {message}")
        return _finish(platform, build_id, writer, lambda s, b: _fail(s, b, stage, message))
    except Exception as exc:  # a bug or an infrastructure failure: still a clear, recorded failure
        log.exception("build %s crashed", build_id)
        crash = writer.mask(f"Internal build error: {exc}")
        writer(crash)
        return _finish(platform, build_id, writer, lambda s, b: _fail(s, b, Stage.BUILD_ERROR, crash))
    finally:
        stop.set()
        watcher.join(timeout=2)
    writer("Build succeeded")
    data = artifact_to_dict(artifact)
    return _finish(platform, build_id, writer, lambda s, b: _succeed(s, b, data))


def venv_policy(settings: Settings) -> VenvPolicy:
    """The site's SPACEPORT_BUILD_* choices for local environments (default Python, base packages, Python source,
    shared store)."""
    return VenvPolicy(
        default_python=settings.build_default_python,
        base_packages=tuple(p for p in settings.build_base_packages.replace(",", " ").split() if p),
        python_source=PythonSource(
            search_path=tuple(d for d in settings.build_python_path.split(os.pathsep) if d),
            downloads=settings.build_python_downloads == "automatic", mirror=settings.build_python_mirror),
        store=settings.build_store,
    )


def _finish(platform: Platform, build_id: int, writer: BuildLogWriter,
            record: Callable[[Session, Build], None]) -> str:
    writer.flush()  # every line is stored before the build is seen as finished
    with platform.tx() as session:
        build = session.get(Build, build_id)
        if build is None or build.status != "running":
            return "cancelled"
        record(session, build)
        return build.status


def _watch(platform: Platform, build_id: int, writer: BuildLogWriter, stop: threading.Event,
           cancel: threading.Event) -> None:
    """Flush logs, heartbeat, and notice cancellation while a build runs."""
    ticks = 0
    while not stop.wait(0.25):
        ticks += 1
        try:
            writer.flush()
            if ticks % 8 == 0 and not _heartbeat(platform, build_id):
                cancel.set()
                return
        except OperationalError as exc:  # a busy or restarting database must not end the watch
            log.warning("build %s: log flush/heartbeat deferred: %s", build_id, exc)


def _heartbeat(platform: Platform, build_id: int) -> bool:
    """Mark the build alive; False once it was cancelled (a newer push) or removed."""
    with platform.tx() as session:
        build = session.get(Build, build_id)
        if build is None or build.status != "running":
            return False
        build.heartbeat_at = utcnow()
        return True


def _export_source(artifacts_dir: Path, repos_dir: Path, owner: str, name: str, sha: str) -> Path:
    dest = artifacts_dir / "sources" / owner / name / sha
    if dest.exists():
        return dest
    tmp = dest.with_name(f".{sha}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    storage.export_tree(storage.repo_path(repos_dir, owner, name), sha, tmp)
    tmp.rename(dest)
    return dest
