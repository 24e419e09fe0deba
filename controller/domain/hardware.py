"""The hardware catalog: accelerator types and hardware flavors, as data.

The default catalog ships as `hardware.yaml` next to this module; an admin file of the same shape is
merged over it (`load_catalog(override_path)`). Everything here is pure except reading those two files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PIDS = 512
DEFAULT_DISK_GB = 2


class CatalogError(Exception):
    """The catalog file is malformed; the message names the entry and the field to fix."""


class UnknownFlavor(LookupError):
    """A hardware flavor name that is not in the catalog."""

    def __init__(self, name: str, valid: list[str]) -> None:
        self.name = name
        self.valid = valid
        super().__init__(f"unknown hardware flavor {name!r}; valid flavors: {', '.join(valid)}")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class AcceleratorType:
    name: str  # nvidia-t4 | nvidia-a10g | ascend-910b | whatever the admin adds
    vendor: str
    k8s_resource: str  # nvidia.com/gpu | huawei.com/Ascend910
    visible_devices_env: str  # CUDA_VISIBLE_DEVICES | ASCEND_RT_VISIBLE_DEVICES
    pretty_name: str = ""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    cuda: Mapping[str, str] = field(default_factory=dict)  # ZeroGPU: what the `spaces` package fakes in the main process


@dataclass(frozen=True)
class HardwareFlavor:
    name: str
    vcpu: float
    memory_gb: float
    pretty_name: str = ""
    accelerator: str | None = None
    accelerator_count: int = 0
    pids: int = DEFAULT_PIDS
    disk_gb: float = DEFAULT_DISK_GB
    zero_gpu: str | None = None  # ZeroGPU: runs on CPU, borrows a GPU of this type per decorated call

    @property
    def memory_mb(self) -> int:
        return int(self.memory_gb * 1024)

    @property
    def disk_mb(self) -> int:
        return int(self.disk_gb * 1024)


@dataclass(frozen=True)
class FlavorResources:
    """What a flavor gives an instance; the runtime layer turns it into a `HardwareSpec`.

    (HardwareSpec lives in controller.runtimes.base, which the pure domain may not import; the field
    names match it one to one, with `accelerator`/`device_ids` forming `Accelerators(type, device_ids)`.)
    """

    flavor: str
    cpu: float
    memory_mb: int
    pids: int
    disk_mb: int
    accelerator: str | None = None
    device_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    flavors: Mapping[str, HardwareFlavor]
    accelerators: Mapping[str, AcceleratorType]

    def flavor(self, name: str) -> HardwareFlavor:
        try:
            return self.flavors[name]
        except KeyError:
            raise UnknownFlavor(name, list(self.flavors)) from None

    def accelerator(self, name: str) -> AcceleratorType:
        try:
            return self.accelerators[name]
        except KeyError:
            valid = ", ".join(self.accelerators)
            raise LookupError(f"unknown accelerator type {name!r}; valid types: {valid}") from None

    def accelerator_of(self, flavor_name: str) -> AcceleratorType | None:
        flavor = self.flavor(flavor_name)
        return self.accelerator(flavor.accelerator) if flavor.accelerator else None

    def to_hf_json(self) -> list[dict[str, Any]]:
        """The body of `GET /api/spaces/hardware` (Hugging Face's shape; Spaceport has no prices)."""
        return [_flavor_hf_json(f, self.accelerators.get(f.accelerator or "")) for f in self.flavors.values()]


def hardware_spec(flavor: HardwareFlavor, device_ids: tuple[str, ...] = ()) -> FlavorResources:
    """The resources an instance of `flavor` gets, with the devices the allocator assigned."""
    return FlavorResources(
        flavor=flavor.name,
        cpu=float(flavor.vcpu),
        memory_mb=flavor.memory_mb,
        pids=flavor.pids,
        disk_mb=flavor.disk_mb,
        accelerator=flavor.accelerator,
        device_ids=tuple(device_ids) if flavor.accelerator else (),
    )


def _flavor_hf_json(flavor: HardwareFlavor, accel: AcceleratorType | None) -> dict[str, Any]:
    accelerator = None
    if accel is not None:
        accelerator = {
            "type": accel.name,
            "vendor": accel.vendor,
            "prettyName": accel.pretty_name or accel.name,
            "quantity": flavor.accelerator_count,
        }
    return {
        "name": flavor.name,
        "prettyName": flavor.pretty_name or flavor.name,
        "cpu": f"{_num(flavor.vcpu)} vCPU",
        "ram": f"{_num(flavor.memory_gb)} GB",
        "accelerator": accelerator,
        "unitCostMicroUSD": 0,
        "unitCostUSD": 0,
        "unitLabel": "hour",
    }


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# ---- loading and merging ------------------------------------------------------------------------


def default_catalog_text() -> str:
    return resources.files("controller.domain").joinpath("hardware.yaml").read_text(encoding="utf-8")


def load_catalog(override_path: Path | None = None) -> Catalog:
    """The shipped catalog, with the admin's file (if any) merged over it."""
    data = _yaml_mapping(default_catalog_text(), "the default catalog")
    if override_path is not None:
        override = _yaml_mapping(override_path.read_text(encoding="utf-8"), str(override_path))
        data = merge_catalog_data(data, override)
    return parse_catalog(data)


def merge_catalog_data(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `override` over `base` per section and entry; an entry set to None is removed."""
    merged: dict[str, Any] = {key: dict(value or {}) for key, value in base.items()}
    for section, entries in override.items():
        target = merged.setdefault(section, {})
        for name, entry in (entries or {}).items():
            if entry is None:
                target.pop(name, None)
            elif isinstance(entry, Mapping) and isinstance(target.get(name), Mapping):
                target[name] = {**target[name], **entry}
            else:
                target[name] = entry
    return merged


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    unknown = set(data) - {"accelerators", "flavors"}
    if unknown:
        raise CatalogError(f"unknown catalog section(s) {sorted(unknown)}; use 'accelerators' and 'flavors'")
    accels = {n: _parse_accelerator(n, e) for n, e in (data.get("accelerators") or {}).items()}
    flavors = {n: _parse_flavor(n, e, accels) for n, e in (data.get("flavors") or {}).items()}
    if not flavors:
        raise CatalogError("the hardware catalog defines no flavors")
    return Catalog(flavors=flavors, accelerators=accels)


def _yaml_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{source} must be a mapping with 'accelerators' and 'flavors'")
    return data


def _require(entry: Mapping[str, Any], key: str, where: str) -> Any:
    if entry.get(key) in (None, ""):
        raise CatalogError(f"{where}: missing '{key}'")
    return entry[key]


def _parse_accelerator(name: str, entry: Mapping[str, Any]) -> AcceleratorType:
    where = f"accelerators.{name}"
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where} must be a mapping")
    tolerations = entry.get("tolerations") or []
    if not isinstance(tolerations, list) or not all(isinstance(t, Mapping) for t in tolerations):
        raise CatalogError(f"{where}.tolerations must be a list of Kubernetes tolerations")
    return AcceleratorType(
        name=name,
        vendor=str(_require(entry, "vendor", where)),
        k8s_resource=str(_require(entry, "k8s_resource", where)),
        visible_devices_env=str(_require(entry, "visible_devices_env", where)),
        pretty_name=str(entry.get("pretty_name") or name),
        node_selector={str(k): str(v) for k, v in (entry.get("node_selector") or {}).items()},
        tolerations=tuple(dict(t) for t in tolerations),
        cuda={str(k): str(v) for k, v in (entry.get("cuda") or {}).items()},
    )


def _parse_flavor(name: str, entry: Mapping[str, Any], accels: Mapping[str, AcceleratorType]) -> HardwareFlavor:
    where = f"flavors.{name}"
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where} must be a mapping")
    accel = entry.get("accelerator")
    count = int(entry.get("accelerator_count", 1 if accel else 0))
    if accel is not None and accel not in accels:
        raise CatalogError(f"{where}.accelerator {accel!r} is not one of: {', '.join(accels) or 'none'}")
    zero = entry.get("zero_gpu")
    if zero is not None and (accel is not None or zero not in accels):
        raise CatalogError(f"{where}.zero_gpu {zero!r} must be one of: {', '.join(accels) or 'none'}, "
                           "on a flavor without 'accelerator' (a ZeroGPU flavor runs on CPU and borrows a GPU per call)")
    if accel is not None and count < 1:
        raise CatalogError(f"{where}.accelerator_count must be at least 1 for accelerator {accel!r}")
    try:
        return HardwareFlavor(
            name=name,
            vcpu=float(_require(entry, "vcpu", where)),
            memory_gb=float(_require(entry, "memory_gb", where)),
            pretty_name=str(entry.get("pretty_name") or name),
            accelerator=str(accel) if accel is not None else None,
            accelerator_count=count if accel is not None else 0,
            pids=int(entry.get("pids", DEFAULT_PIDS)),
            disk_gb=float(entry.get("disk_gb", DEFAULT_DISK_GB)),
            zero_gpu=str(zero) if zero is not None else None,
        )
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"{where}: {exc}") from exc
