"""The environment and identity every runtime gives an app: local, docker and kubernetes build the app's
environment with `app_env` (the one place the platform-owned names are decided).

The hosted layout (Hugging Face Spaces): the app runs as an unprivileged user whose HOME is /home/user,
its code is a writable /home/user/app and its working directory, SYSTEM=spaces, SPACE_ID,
SPACE_AUTHOR_NAME, SPACE_REPO_NAME, SPACE_TITLE and SPACE_HOST describe the space (the controller passes
SPACE_HOST, CPU_CORES, MEMORY, ACCELERATOR, ...; the names of the space itself are derived from its id here
so every runtime has them), and no proxy variable of the host is ever handed on.
Containers take HOME and the working directory from their image (generated images set /home/user and
/home/user/app; a docker space's own Dockerfile decides, as on the hosted platform).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from builder.artifact import artifact_to_dict
from builder.envnames import (
    HOSTED_SDK_DEFAULTS,
    hosted_app_env,
    without_reserved_names,
    without_runtime_names,
)
from controller.runtimes.base import InstanceSpec

LABEL_INSTANCE = "spaceport.instance"
LABEL_SPACE = "spaceport.space"
LABEL_SPEC = "spaceport.spec-hash"
LABEL_ARTIFACT = "spaceport.artifact"
LABEL_FLAVOR = "spaceport.flavor"
APP_HOME = "/home/user"
APP_DIR = f"{APP_HOME}/app"
SYSTEM_VALUE = "spaces"
# Set by the runtime after everything a space supplies (a space's SYSTEM would be ignored, and said so).
RUNTIME_SET = frozenset({"SYSTEM"})
PROXY_NAMES = frozenset(n for base in ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")
                        for n in (base, base.upper()))  # fmt: skip


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


def space_names(space_id: str) -> dict[str, str]:
    """SPACE_ID, SPACE_AUTHOR_NAME, SPACE_REPO_NAME and a default SPACE_TITLE, from "owner/name"."""
    owner, _, repo = space_id.partition("/")
    return {"SPACE_ID": space_id, "SPACE_AUTHOR_NAME": owner, "SPACE_REPO_NAME": repo, "SPACE_TITLE": repo}


def app_env(spec: InstanceSpec, *, port: int, bind: str, home: str | None = None,
            tmp: str | None = None, app_dir: str | None = None) -> tuple[dict[str, str], list[str]]:  # fmt: skip
    """(the app's environment, names dropped), the same on every runtime: the space's names and the
    hosted SDK defaults, then the artifact's and the space's own values (the controller's SPACE_HOST,
    SPACE_TITLE, ... win over the derived defaults), then what the runtime owns: SYSTEM=spaces, HOME & co
    and PYTHONPATH=app_dir (processes; containers take them from their image) and the port. No proxy
    variable is ever added: the platform has none to give."""
    given, dropped = checked_user_env(spec)
    owned = sorted(k for k in given if k in RUNTIME_SET)
    given = {k: v for k, v in given.items() if k not in RUNTIME_SET}
    env = {**space_names(spec.space_id), **HOSTED_SDK_DEFAULTS, **given, "SPACE_ID": spec.space_id,
           "SYSTEM": SYSTEM_VALUE}
    if home is not None:
        env.update(home_env(home, tmp or f"{home}/tmp"))
    if app_dir is not None:
        env.update(hosted_app_env(app_dir))
    env.update(port_env(port, bind))
    return env, sorted({*dropped, *owned})


def spec_hash(spec: InstanceSpec) -> str:
    """Identity of what runs: same hash -> an existing instance can simply be (re)started."""
    body: dict[str, object] = {
        "artifact": artifact_to_dict(spec.artifact),
        "env": sorted(spec.env.items()),
        "hardware": asdict(spec.hardware),
        "space": spec.space_id,
    }
    if spec.mounts:  # only then, so instances without mounts keep the hash they were started with
        body["mounts"] = [asdict(m) for m in spec.mounts]
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
