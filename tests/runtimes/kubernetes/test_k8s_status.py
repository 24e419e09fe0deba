from __future__ import annotations

from typing import Any

from controller.runtimes.base import State
from controller.runtimes.kubernetes.status import instance_status


def deployment(replicas: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "spaceport-a", "annotations": {"spaceport.instance-name": "a/web@1"}},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"ports": [{"containerPort": 8501}]}]}}},
        "status": status,
    }


def pod(**container_status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web-1"}, "status": {"containerStatuses": [container_status]}}


def test_crash_loop_is_exited_with_the_last_exit_code() -> None:
    crashing = pod(state={"waiting": {"reason": "CrashLoopBackOff"}}, lastState={"terminated": {"exitCode": 3}})
    status = instance_status(deployment(), [crashing], "cluster.local")
    assert (status.name, status.state, status.exit_code) == ("a/web@1", State.EXITED, 3)
    assert "keeps exiting" in status.message


def test_image_pull_failure_is_exited_with_reason() -> None:
    failing = pod(state={"waiting": {"reason": "ImagePullBackOff", "message": "not found"}})
    status = instance_status(deployment(), [failing], "cluster.local")
    assert (status.state, status.exit_code, status.message) == (State.EXITED, None, "ImagePullBackOff: not found")


def test_starting_and_ready() -> None:
    starting = instance_status(deployment(), [pod(state={"running": {}})], "cluster.local")
    assert starting.state == State.RUNNING and starting.message.startswith("starting")
    assert starting.endpoint is not None and starting.endpoint.url == "http://web.spaceport-a.svc.cluster.local:8501"
    ready = instance_status(deployment(readyReplicas=1), [pod(state={"running": {}})], "cluster.local")
    assert ready.message == "ready"


def test_other_replica_failures_are_reported() -> None:
    failure = {"type": "ReplicaFailure", "status": "True", "message": "serviceaccount missing"}
    status = instance_status(deployment(conditions=[failure]), [], "cluster.local")
    assert status.message == "pending: pods cannot be created: serviceaccount missing"
