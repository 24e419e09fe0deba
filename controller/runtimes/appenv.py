"""The environment and identity every runtime gives an app (shared by local and docker)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from builder.artifact import artifact_to_dict
from builder.envnames import without_reserved_names, without_runtime_names
from controller.runtimes.base import InstanceSpec

LABEL_INSTANCE = "spaceport.instance"
LABEL_SPACE = "spaceport.space"
LABEL_SPEC = "spaceport.spec-hash"
LABEL_ARTIFACT = "spaceport.artifact"
LABEL_FLAVOR = "spaceport.flavor"


def port_env(port: int, bind_host: str) -> dict[str, str]:
    """What Gradio, Streamlit and generic apps read to pick their port and address."""
    return {
        "PORT": str(port),
        "GRADIO_SERVER_PORT": str(port),
        "STREAMLIT_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": bind_host,
        "STREAMLIT_SERVER_ADDRESS": bind_host,
    }


def home_env(home: str, tmp: str) -> dict[str, str]:
    return {
        "HOME": home,
        "TMPDIR": tmp,
        "XDG_CACHE_HOME": f"{home}/.cache",
        "XDG_CONFIG_HOME": f"{home}/.config",
        "GRADIO_TEMP_DIR": f"{tmp}/gradio",
        "MPLCONFIGDIR": f"{home}/.cache/matplotlib",
        "HF_HOME": f"{home}/.cache/huggingface",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
        "USER": "user",
        "LOGNAME": "user",
    }


def visible_devices_env(spec: InstanceSpec) -> dict[str, str]:
    """For processes on the host (local runtime); containers get only their devices instead."""
    acc = spec.hardware.accelerators
    if acc is None:
        return {"CUDA_VISIBLE_DEVICES": ""}
    ids = ",".join(acc.device_ids)
    if acc.type.startswith("nvidia"):
        return {"CUDA_VISIBLE_DEVICES": ids}
    if acc.type.startswith("ascend"):
        return {"ASCEND_RT_VISIBLE_DEVICES": ids}
    return {}


def user_env(spec: InstanceSpec) -> dict[str, str]:
    """Artifact defaults, then the space's variables and secrets (later wins), without the names the
    platform owns (builder/envnames.py)."""
    return checked_user_env(spec)[0]


def checked_user_env(spec: InstanceSpec) -> tuple[dict[str, str], list[str]]:
    """(user_env, names dropped). The artifact's env comes from front matter: no reserved name at all;
    the spec's env comes from the controller, which sets SPACE_ID & co itself: no runtime-owned name."""
    artifact, dropped = without_reserved_names(dict(spec.artifact.env))
    given, dropped_too = without_runtime_names(spec.env)
    return {**artifact, **given}, sorted({*dropped, *dropped_too})


def spec_hash(spec: InstanceSpec) -> str:
    """Identity of what runs: same hash -> an existing instance can simply be (re)started."""
    body = {
        "artifact": artifact_to_dict(spec.artifact),
        "env": sorted(spec.env.items()),
        "hardware": asdict(spec.hardware),
        "space": spec.space_id,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:24]


def instance_labels(spec: InstanceSpec) -> dict[str, str]:
    return {
        **spec.labels,
        LABEL_INSTANCE: spec.name,
        LABEL_SPACE: spec.space_id,
        LABEL_SPEC: spec_hash(spec),
        LABEL_ARTIFACT: spec.artifact.ref,
        LABEL_FLAVOR: spec.hardware.flavor,
    }
