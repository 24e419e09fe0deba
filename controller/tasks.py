"""Celery app and tasks: builds, the idle sweep, lost-build recovery and artifact collection. The database
stays the source of truth."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cache

from celery import Celery

from controller import broker
from controller.config import Settings
from controller.services.platform import Platform

broker.register()


def make_celery(settings: Settings) -> Celery:
    app = Celery("spaceport", broker=settings.celery_broker, backend=_backend(settings), include=["controller.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="spaceport",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep-idle": {"task": "spaceport.sweep", "schedule": settings.sweep_interval},
            "recover-builds": {"task": "spaceport.recover", "schedule": settings.recover_interval},
            "collect-artifacts": {"task": "spaceport.gc", "schedule": settings.gc_interval},
        },
    )
    if settings.celery_broker.startswith("spacefs"):
        app.conf.broker_transport_options = broker.transport_options(settings.broker_dir)
    elif settings.celery_broker.startswith("redis"):
        app.conf.broker_transport_options = {"visibility_timeout": 3600}
    return app


def _backend(settings: Settings) -> str:
    """Results are only used by `spaceport ping`-style round trips; builds report through the DB."""
    if settings.celery_broker.startswith("redis"):
        return settings.celery_broker
    results = settings.broker_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    return f"file://{results}"


celery_app = make_celery(Settings())


@cache
def _platform() -> Platform:
    """One Platform per worker process (built from the environment, like the worker's settings)."""
    from controller.services.bus import KICK, bus_for

    platform = Platform(Settings())
    platform.migrate()
    bus = bus_for(platform.settings)
    platform.kick = lambda: bus.publish(KICK)  # a finished build is deployed now, not at the next pass
    return platform


@celery_app.task(name="spaceport.build", ignore_result=True)
def build_task(build_id: int) -> str:
    from controller.services.builds import run_build

    return run_build(_platform(), build_id)


@celery_app.task(name="spaceport.sweep", ignore_result=True)
def sweep_task() -> int:
    from controller.services.leases import exclusive
    from controller.services.sleep import sweep

    with exclusive(_platform(), "sweep") as mine:  # every replica's beat may send it: one runs at a time
        return sweep(_platform()) if mine else 0


@celery_app.task(name="spaceport.recover", ignore_result=True)
def recover_task() -> int:
    """Find builds no live task owns (lost worker, lost message) and run them again."""
    from controller.services.builds import queued_ids, recover_lost
    from controller.services.leases import exclusive

    platform = _platform()
    with exclusive(platform, "recover") as mine:
        if not mine:
            return 0
        with platform.tx() as session:
            stale = timedelta(seconds=platform.settings.build_stale_after)  # a queued message may have died too
            ids = recover_lost(session, stale) + queued_ids(session, older_than=stale)
    for build_id in sorted(set(ids)):
        build_task.delay(build_id)
    return len(ids)


@celery_app.task(name="spaceport.gc", ignore_result=True)
def gc_task() -> int:
    """Collect build sources, venvs and images no space's current or running build uses (issue 19)."""
    from controller.services.artifact_gc import collect
    from controller.services.leases import exclusive

    with exclusive(_platform(), "gc") as mine:
        return collect(_platform()).freed_bytes if mine else 0


@celery_app.task(name="spaceport.ping")
def ping_task(value: str) -> str:
    return f"pong:{value}:{os.getpid()}"


def enqueue_build(build_id: int) -> None:
    build_task.delay(build_id)
