from __future__ import annotations

from pathlib import Path

import pytest

from controller.domain.hardware import (
    CatalogError,
    FlavorResources,
    UnknownFlavor,
    hardware_spec,
    load_catalog,
    merge_catalog_data,
    parse_catalog,
)

EXPECTED = {
    # name: (vcpu, memory_gb, accelerator, count)
    "cpu-basic": (2, 16, None, 0),
    "cpu-upgrade": (8, 32, None, 0),
    "t4-small": (4, 15, "nvidia-t4", 1),
    "t4-medium": (8, 30, "nvidia-t4", 1),
    "a10g-small": (4, 15, "nvidia-a10g", 1),
    "a10g-large": (12, 46, "nvidia-a10g", 1),
    "a10g-largex2": (24, 92, "nvidia-a10g", 2),
    "a10g-largex4": (48, 184, "nvidia-a10g", 4),
    "ascend-910b-x1": (24, 192, "ascend-910b", 1),
    "ascend-910b-x2": (48, 384, "ascend-910b", 2),
    "zero-a10g": (2, 16, None, 0),  # ZeroGPU: CPU hardware, a GPU per call (zero_gpu below)
    "zero-t4": (2, 16, None, 0),
}


def test_default_catalog_has_the_hf_flavors() -> None:
    catalog = load_catalog()
    got = {f.name: (f.vcpu, f.memory_gb, f.accelerator, f.accelerator_count) for f in catalog.flavors.values()}
    assert got == EXPECTED


def test_zero_flavors_borrow_a_gpu_type_and_must_not_also_hold_one(tmp_path: Path) -> None:
    catalog = load_catalog()
    assert (catalog.flavor("zero-a10g").zero_gpu, catalog.flavor("zero-t4").zero_gpu) == ("nvidia-a10g", "nvidia-t4")
    assert catalog.flavor("t4-small").zero_gpu is None
    assert catalog.accelerator("nvidia-t4").cuda["device_name"] == "Tesla T4"
    bad = tmp_path / "bad.yaml"
    bad.write_text("flavors:\n  zero-x: {vcpu: 1, memory_gb: 1, zero_gpu: nvidia-t4, accelerator: nvidia-t4}\n")
    with pytest.raises(CatalogError, match="zero_gpu"):
        load_catalog(bad)
    bad.write_text("flavors:\n  zero-x: {vcpu: 1, memory_gb: 1, zero_gpu: h100}\n")
    with pytest.raises(CatalogError, match=r"zero-x\.zero_gpu 'h100'"):
        load_catalog(bad)


def test_accelerator_types_map_to_device_plugin_resources() -> None:
    catalog = load_catalog()
    t4, a10g, ascend = (catalog.accelerator(n) for n in ("nvidia-t4", "nvidia-a10g", "ascend-910b"))
    assert (t4.k8s_resource, t4.visible_devices_env) == ("nvidia.com/gpu", "CUDA_VISIBLE_DEVICES")
    assert dict(t4.node_selector) == {"nvidia.com/gpu.product": "Tesla-T4"}
    assert dict(a10g.node_selector) == {"nvidia.com/gpu.product": "NVIDIA-A10G"}
    assert (ascend.k8s_resource, ascend.visible_devices_env) == ("huawei.com/Ascend910", "ASCEND_RT_VISIBLE_DEVICES")
    assert dict(ascend.node_selector) == {"accelerator": "huawei-Ascend910"}
    assert ascend.tolerations == ({"key": "huawei.com/Ascend910", "operator": "Exists", "effect": "NoSchedule"},)
    assert catalog.accelerator_of("cpu-basic") is None
    assert catalog.accelerator_of("t4-small") == t4


def test_unknown_flavor_lists_valid_names() -> None:
    with pytest.raises(UnknownFlavor) as err:
        load_catalog().flavor("h100-huge")
    message = str(err.value)
    assert "h100-huge" in message
    assert "cpu-basic" in message and "ascend-910b-x2" in message


def test_hardware_spec_carries_devices_only_for_accelerated_flavors() -> None:
    catalog = load_catalog()
    assert hardware_spec(catalog.flavor("a10g-largex2"), ("0", "1")) == FlavorResources(
        flavor="a10g-largex2", cpu=24.0, memory_mb=92 * 1024, pids=512, disk_mb=2048,
        accelerator="nvidia-a10g", device_ids=("0", "1"),
    )
    cpu = hardware_spec(catalog.flavor("cpu-basic"), ("3",))
    assert (cpu.accelerator, cpu.device_ids, cpu.memory_mb, cpu.cpu) == (None, (), 16384, 2.0)


def test_admin_override_adds_changes_and_removes(tmp_path: Path) -> None:
    override = tmp_path / "hardware.yaml"
    override.write_text(
        "accelerators:\n"
        "  nvidia-t4:\n"
        "    node_selector: {cloud.google.com/gke-accelerator: nvidia-tesla-t4}\n"
        "flavors:\n"
        "  a10g-largex4: null\n"
        "  cpu-basic: {vcpu: 1, pids: 256}\n"
        "  t4-xl: {vcpu: 16, memory_gb: 64, accelerator: nvidia-t4, accelerator_count: 4}\n"
    )
    catalog = load_catalog(override)
    assert "a10g-largex4" not in catalog.flavors
    basic = catalog.flavor("cpu-basic")
    assert (basic.vcpu, basic.memory_gb, basic.pids, basic.pretty_name) == (1, 16, 256, "CPU basic")
    assert catalog.flavor("t4-xl").accelerator_count == 4
    t4 = catalog.accelerator("nvidia-t4")
    assert dict(t4.node_selector) == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert t4.k8s_resource == "nvidia.com/gpu"  # untouched fields kept


def test_merge_does_not_mutate_inputs() -> None:
    base = {"flavors": {"a": {"vcpu": 1, "memory_gb": 1}}}
    merge_catalog_data(base, {"flavors": {"a": {"vcpu": 2}}})
    assert base == {"flavors": {"a": {"vcpu": 1, "memory_gb": 1}}}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"flavors": {"x": {"vcpu": 1, "memory_gb": 1, "accelerator": "tpu"}}}, "flavors.x.accelerator 'tpu'"),
        ({"flavors": {"x": {"memory_gb": 1}}}, "flavors.x: missing 'vcpu'"),
        ({"flavors": {"x": {"vcpu": "lots", "memory_gb": 1}}}, "flavors.x"),
        ({"flavors": {}}, "no flavors"),
        ({"flavour": {}}, "unknown catalog section"),
        ({"accelerators": {"g": {"vendor": "v", "k8s_resource": "r"}}, "flavors": {}}, "visible_devices_env"),
    ],
)
def test_bad_catalogs_say_what_to_fix(data: dict[str, object], needle: str) -> None:
    with pytest.raises(CatalogError, match=None) as err:
        parse_catalog(data)
    assert needle in str(err.value)


def test_bad_override_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(CatalogError, match="must be a mapping"):
        load_catalog(bad)


def test_hf_json_shape() -> None:
    rows = {row["name"]: row for row in load_catalog().to_hf_json()}
    assert rows["cpu-basic"] == {
        "name": "cpu-basic", "prettyName": "CPU basic", "cpu": "2 vCPU", "ram": "16 GB", "accelerator": None,
        "unitCostMicroUSD": 0, "unitCostUSD": 0, "unitLabel": "hour",
    }
    assert rows["a10g-largex2"]["accelerator"] == {
        "type": "nvidia-a10g", "vendor": "nvidia", "prettyName": "NVIDIA A10G", "quantity": 2,
    }
