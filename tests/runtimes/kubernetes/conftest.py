"""Fixtures for the Kubernetes runtime tests: the catalog, the site config and a fake cluster."""

from __future__ import annotations

from typing import Any

import pytest

from controller.domain.hardware import Catalog, load_catalog
from controller.runtimes.kubernetes.objects import SiteConfig
from tests.runtimes.kubernetes import fake


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def site(catalog: Catalog) -> SiteConfig:
    return SiteConfig(catalog=catalog)


@pytest.fixture
def cluster() -> Any:
    """A fake cluster: a CPU node, one T4 node (1 GPU), one A10G node (2 GPUs), one Ascend node (2 NPUs)."""
    gpu_taint = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    npu_taint = [{"key": "huawei.com/Ascend910", "effect": "NoSchedule"}]
    return fake.FakeKube(nodes=[
        fake.node("cpu-1"),
        fake.node("t4-1", {"nvidia.com/gpu.product": "Tesla-T4"}, {"nvidia.com/gpu": "1"}, gpu_taint),
        fake.node("a10g-1", {"nvidia.com/gpu.product": "NVIDIA-A10G"}, {"nvidia.com/gpu": "2"}, gpu_taint),
        fake.node("npu-1", {"accelerator": "huawei-Ascend910"}, {"huawei.com/Ascend910": "2"}, npu_taint),
        fake.node("t4-cordoned", {"nvidia.com/gpu.product": "Tesla-T4"}, {"nvidia.com/gpu": "4"}, gpu_taint,
                  unschedulable=True),
    ])
