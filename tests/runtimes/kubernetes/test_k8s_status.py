from __future__ import annotations

from typing import Any

import pytest

from controller.runtimes.base import State
from controller.runtimes.kubernetes.status import instance_status
from tests.runtimes.kubernetes import fake


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


def test_starting_and_ready_have_no_message() -> None:
    """Like the local and docker runtimes: a live instance only has a message when something is wrong."""
    starting = instance_status(deployment(), [{"metadata": {"name": "web-1"}, "status": fake.running_not_ready()}],
                               "cluster.local")
    assert (starting.state, starting.message) == (State.RUNNING, "")
    assert starting.endpoint is not None and starting.endpoint.url == "http://web.spaceport-a.svc.cluster.local:8501"
    ready = instance_status(deployment(readyReplicas=1), [{"metadata": {"name": "web-1"}, "status": fake.running_ready()}],
                            "cluster.local")
    assert (ready.state, ready.message) == (State.RUNNING, "")


@pytest.mark.parametrize("word", ["exceeded quota", "Exceeded quota"])  # older API servers capitalized it
def test_quota_refusal_from_the_failed_create_condition(word: str) -> None:
    raw = (f'pods "web-5d8f7c-abcde" is forbidden: {word}: spaceport-accelerators, requested: '
           "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=2, limited: requests.nvidia.com/gpu=2")
    status = instance_status(deployment(conditions=[fake.failed_create(raw)]), [], "cluster.local")
    assert status.state == State.RUNNING
    assert status.message.startswith("Waiting: the owner's accelerator quota on the cluster is used up")
    assert raw in status.message


def test_a_pending_pod_not_yet_looked_at_by_the_scheduler_has_no_message() -> None:
    pending = {"metadata": {"name": "web-1"}, "status": fake.plain(fake.k8s.V1PodStatus(phase="Pending"))}
    assert instance_status(deployment(), [pending], "cluster.local").message == ""


def test_other_replica_failures_are_reported() -> None:
    failure = {"type": "ReplicaFailure", "status": "True", "message": "serviceaccount missing"}
    status = instance_status(deployment(conditions=[failure]), [], "cluster.local")
    assert status.message == "Waiting: the cluster refuses to create the app's pod: serviceaccount missing"
