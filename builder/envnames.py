"""Environment variable names the platform owns: the one rule for front-matter env, space variables
and secrets, and what each runtime hands an app.

Two kinds of reserved names:
* runtime-owned (`runtime_reason`): set by the runtime for every app, or able to change what a
  process loads or runs (PATH, HOME, LD_*, PYTHONHOME, the port an app must serve, ...). A runtime
  drops them from anything a space supplies, always.
* platform-set (`platform_reason`): values Spaceport itself injects the Hugging Face way (SPACE_ID,
  SPACE_HOST, CPU_CORES, OAuth settings, SPACES_* for ZeroGPU, SPACEPORT_* settings ...). A space's
  owner cannot set them; the controller passes its own values through.

`reserved_reason(name)` is the union: None if an owner may use the name, else a sentence saying why
not and what to do instead. builder/ owns this module because the builder validates front matter and
never imports controller/; the controller imports it from here.
"""

from __future__ import annotations

_PATHS = "Spaceport sets it for every app (the app's venv and the system tools come first)"
_LOADER = "it changes which code the dynamic loader or the interpreter loads into processes"
_SHELL = "it makes shells run code or parse commands differently"
_IDENTITY = "Spaceport sets it to the app's own home, user and temporary directory"
_PORT = "Spaceport sets it to the port and address the proxy reaches the app on (use app_port in README.md)"
_DEVICES = "Spaceport sets it to the accelerators assigned to the space (choose hardware instead)"

RUNTIME_NAMES: dict[str, str] = {
    "PATH": _PATHS,
    "VIRTUAL_ENV": _PATHS,
    "PYTHONHOME": _LOADER,
    "PYTHONPATH": _LOADER,
    "PYTHONSTARTUP": _LOADER,
    "PYTHONUSERBASE": _LOADER,
    "PYTHONEXECUTABLE": _LOADER,
    "GCONV_PATH": _LOADER,
    "GLIBC_TUNABLES": _LOADER,
    "LOCPATH": _LOADER,
    "NLSPATH": _LOADER,
    "BASH_ENV": _SHELL,
    "ENV": _SHELL,
    "IFS": _SHELL,
    "CDPATH": _SHELL,
    "SHELLOPTS": _SHELL,
    "BASHOPTS": _SHELL,
    "SHELL": _SHELL,
    "HOME": _IDENTITY,
    "USER": _IDENTITY,
    "LOGNAME": _IDENTITY,
    "PWD": _IDENTITY,
    "TMPDIR": _IDENTITY,
    "PORT": _PORT,
    "GRADIO_SERVER_PORT": _PORT,
    "GRADIO_SERVER_NAME": _PORT,
    "STREAMLIT_SERVER_PORT": _PORT,
    "STREAMLIT_SERVER_ADDRESS": _PORT,
    "CUDA_VISIBLE_DEVICES": _DEVICES,
    "NVIDIA_VISIBLE_DEVICES": _DEVICES,
    "ASCEND_RT_VISIBLE_DEVICES": _DEVICES,
}
RUNTIME_PREFIXES: dict[str, str] = {"LD_": _LOADER, "BASH_FUNC_": _SHELL}

_HF = "Spaceport sets it for every space, as Hugging Face Spaces does"
PLATFORM_NAMES: dict[str, str] = {
    name: _HF
    for name in (
        "SPACE_ID", "SPACE_HOST", "SPACE_AUTHOR_NAME", "SPACE_REPO_NAME", "SPACE_TITLE", "SPACE_CREATOR_USER_ID",
        "CPU_CORES", "MEMORY", "ACCELERATOR", "GRADIO_ROOT_PATH", "STREAMLIT_SERVER_BASE_URL_PATH",
        "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES", "OPENID_PROVIDER_URL",
    )
}  # fmt: skip
PLATFORM_PREFIXES: dict[str, str] = {
    "SPACES_": "Spaceport sets SPACES_* for the hardware it assigns (ZeroGPU), as Hugging Face does",
    "SPACEPORT_": "SPACEPORT_* names configure the platform itself",
}


# The hosted SDK images' own ENV lines, which a space's variables may override (as on Hugging Face, where
# they are image defaults): no flagging directory next to the code, one port per Gradio app. The hosted
# images also set PYTHONPATH to the app directory (so `app_file: pkg/sub/main.py` can `import pkg`); that
# one is runtime-owned here (`hosted_app_env`) because PYTHONPATH decides what code a process loads.
HOSTED_SDK_DEFAULTS: dict[str, str] = {"GRADIO_ALLOW_FLAGGING": "never", "GRADIO_NUM_PORTS": "1"}


def hosted_app_env(app_dir: str) -> dict[str, str]:
    """The runtime-owned part of the hosted SDK environment for an app whose code is at `app_dir`."""
    return {"PYTHONPATH": app_dir}


def _lookup(name: str, names: dict[str, str], prefixes: dict[str, str]) -> str | None:
    upper = name.upper()
    if upper in names:
        return names[upper]
    return next((why for prefix, why in prefixes.items() if upper.startswith(prefix)), None)


def runtime_reason(name: str) -> str | None:
    """Why a runtime never takes this name from a space (None: it may)."""
    return _lookup(name, RUNTIME_NAMES, RUNTIME_PREFIXES)


def platform_reason(name: str) -> str | None:
    """Why only the platform sets this name (None: an owner may)."""
    return _lookup(name, PLATFORM_NAMES, PLATFORM_PREFIXES)


def reserved_reason(name: str) -> str | None:
    """None if a space's owner may set `name`, else why not (a sentence to show them)."""
    why = runtime_reason(name) or platform_reason(name)
    if why is None:
        return None
    return f"{name} is reserved: {why}. Use another name (e.g. MY_{name.lstrip('_')})."


def without_runtime_names(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(env without runtime-owned names, the names dropped)."""
    dropped = sorted(k for k in env if runtime_reason(k) is not None)
    return {k: v for k, v in env.items() if k not in dropped}, dropped


def without_reserved_names(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(env without any reserved name, the names dropped)."""
    dropped = sorted(k for k in env if reserved_reason(k) is not None)
    return {k: v for k, v in env.items() if k not in dropped}, dropped
