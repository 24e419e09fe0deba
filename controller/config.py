"""Settings: pydantic-settings, env prefix SPACEPORT_. Strict: an unknown SPACEPORT_* variable is an error."""

from __future__ import annotations

import difflib
import os
import secrets
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.domain.naming import registry_prefix

ENV_PREFIX = "SPACEPORT_"
# The test tooling's own variables (scripts/test-services.sh writes them to .test-env.sh; tests/conftest.py,
# tests/support and bench/ read them). Test shells export them, so every server and worker a test or bench
# starts inherits them: they are reserved, never settings, and Settings ignores them.
RESERVED_PREFIX = "SPACEPORT_TEST_"
# SPACEPORT_* variables that are not Settings fields but are read where Settings cannot be (builder/ never
# imports controller/) or are a CLI option's envvar. Known, so they are not unknown settings.
OTHER_VARIABLES: Mapping[str, str] = {
    "SPACEPORT_PYPI_URL": "builder/sdkdeps.py: index JSON API that dates sdk_version releases",
    "SPACEPORT_DEBIAN_MIRROR": "builder/bootstrap.py: Debian mirror of `spaceport images bootstrap`",
    "SPACEPORT_RUNTIME_IMAGES": "builder/bootstrap.py: the runtime-images/ directory to build from",
    "SPACEPORT_TOKEN": "`spaceport logs --token`",
    "SPACEPORT_QUOTA_REPO": "controller/git/quota.py: set by Spaceport's git HTTP for its pre-receive hook",
}
# Names people reach for that difflib alone would match badly (BASE_URL is closest to DATABASE_URL).
SYNONYMS: Mapping[str, str] = {
    "SPACEPORT_REDIS_URL": "SPACEPORT_BROKER_URL",
    "SPACEPORT_CELERY_BROKER_URL": "SPACEPORT_BROKER_URL",
    "SPACEPORT_BASE_URL": "SPACEPORT_PUBLIC_URL",
    "SPACEPORT_EXTERNAL_URL": "SPACEPORT_PUBLIC_URL",
    "SPACEPORT_SITE_URL": "SPACEPORT_PUBLIC_URL",
    "SPACEPORT_URL": "SPACEPORT_PUBLIC_URL",
    "SPACEPORT_DB_URL": "SPACEPORT_DATABASE_URL",
    "SPACEPORT_POSTGRES_URL": "SPACEPORT_DATABASE_URL",
}


class UnknownSettingError(Exception):
    """A SPACEPORT_* variable that is no setting (a typo would otherwise be silently ignored)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.message = "\n".join(unknown_setting_message(name) for name in names)
        super().__init__(self.message)


def setting_variables() -> list[str]:
    """Every settings variable, SPACEPORT_DATA_DIR ... (the fields of Settings)."""
    return [ENV_PREFIX + name.upper() for name in Settings.model_fields]


def unknown_settings(environ: Mapping[str, str]) -> list[str]:
    """SPACEPORT_* names in `environ` that are no setting, no known other variable and not reserved.

    Matched without regard to case, like pydantic-settings matches the fields."""
    known = set(setting_variables()) | set(OTHER_VARIABLES)
    return sorted(name for name in environ
                  if name.upper().startswith(ENV_PREFIX) and not name.upper().startswith(RESERVED_PREFIX)
                  and name.upper() not in known)


def closest_setting(name: str) -> str | None:
    upper = name.upper()
    if upper in SYNONYMS:
        return SYNONYMS[upper]
    # compared without the common prefix, which would make every name look alike
    fields = [field.upper() for field in Settings.model_fields]
    found = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), fields, n=1, cutoff=0.6)
    return ENV_PREFIX + found[0] if found else None


def unknown_setting_message(name: str) -> str:
    closest = closest_setting(name)
    hint = f"did you mean {closest}?" if closest else "no setting has a similar name."
    return f"Unknown setting {name}: {hint} (all settings: README.md, section Configuration)"


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise UnknownSettingError naming every unknown SPACEPORT_* variable of `environ` (default os.environ)."""
    unknown = unknown_settings(os.environ if environ is None else environ)
    if unknown:
        raise UnknownSettingError(unknown)


class Settings(BaseSettings):
    """Everything configurable about one Spaceport site. Paths default inside DATA_DIR.

    Strict: building it raises UnknownSettingError if the environment has a SPACEPORT_* variable that is
    none of these fields (nor OTHER_VARIABLES, nor reserved), and unknown keyword arguments are refused."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    data_dir: Path = Field(default=Path(".spaceport"), description="Where repos, artifacts and the DB live")
    database_url: str = Field(default="", description="SQLAlchemy URL; default SQLite in the data dir")
    broker_url: str = Field(default="", description="Celery broker; default embedded (no server)")
    runtime: Literal["local", "docker", "kubernetes"] = "local"
    apps_domain: str = Field(default="", description="Apps are served at OWNER-NAME.APPS_DOMAIN")
    public_url: str = Field(default="", description="External URL of this site, e.g. http://localhost:8000")
    secret_key: str = Field(default="", description="Signs sessions, encrypts secrets; default kept in data dir")
    oauth_provider_url: str = Field(default="", description="OPENID_PROVIDER_URL given to hf_oauth apps: where "
                                    "they reach the token, userinfo and JWKS endpoints (default: the platform listener "
                                    "when serve runs as root on the local or docker runtime, else PUBLIC_URL)")
    docker_host: str = ""
    registry_mirror: str = ""
    registry: str = Field(default="", description="Registry every container build is pushed to and every runtime "
                          "pulls from, e.g. registry.local:5000/spaces (empty: images stay on the building engine)")
    image_builder: Literal["docker", "buildah"] = Field(default="docker", description="How container builds run: "
                                                        "the Docker engine, or daemonless buildah (needs REGISTRY)")
    base_image_aliases: str = Field(default="", description="UPSTREAM=LOCAL pairs, comma separated")
    extra_ca_dir: Path = Path("/usr/local/share/ca-certificates")
    hardware_catalog: Path | None = None
    sandbox: Literal["auto", "bwrap", "none"] = "auto"
    allow_unsandboxed: bool = False
    egress_allow: str = Field(default="", description="CIDRs apps may reach although private/reserved (comma separated)")
    build_time_limit: float = 1800.0
    build_egress_allow: str = Field(default="", description="Extra hosts builds may reach (comma separated; "
                                    "'.example.org' allows subdomains), besides pypi.org and files.pythonhosted.org")
    build_memory_mb: int = Field(default=4096, description="Memory limit of one build (venv sandbox and docker RUN steps)")
    build_cpus: float = Field(default=2.0, description="CPU limit of one build")
    build_network: str = Field(default="spaceport-build", description="Docker network for image builds' RUN steps")
    build_uv_seed: Path | None = Field(default=None, description="A trusted, root-owned uv cache each owner's new build "
                                       "cache starts from (hardlinked, read-only to builds); none: owners start cold")
    build_store: Path | None = Field(default=None, description="The content-addressed store sealed local venvs share "
                                     "(file contents and bytecode, root-only); sites on one host may share one "
                                     "(same filesystem as their data dirs); none: ARTIFACTS/venv-store")
    build_default_python: str = Field(default="3.10", description="Python for spaces whose README.md sets no "
                                      "python_version (the hosted default; the nearest installed one otherwise)")
    build_base_packages: str = Field(default="datasets huggingface_hub hf-transfer requests",
                                     description="Packages every gradio/streamlit venv gets first, as on Hugging Face "
                                     "Spaces (space or comma separated; empty: none)")
    build_python_downloads: Literal["never", "automatic"] = Field(
        default="never", description="'automatic': uv downloads a Python that is not installed (UV_PYTHON_DOWNLOADS)")
    build_python_mirror: str = Field(default="", description="Where uv downloads Pythons from (UV_PYTHON_INSTALL_MIRROR)")
    build_python_path: str = Field(default="", description="Extra directories searched for interpreters (os.pathsep "
                                   "separated), before pyenv installations and PATH")
    reconcile_interval: float = 5.0
    sweep_interval: float = 30.0
    build_stale_after: float = Field(default=60.0, description="Seconds without a heartbeat before a running build counts as lost")
    recover_interval: float = Field(default=30.0, description="How often beat looks for lost builds")
    light_sleep_enabled: bool = True
    deep_sleep_enabled: bool = True
    deep_sleep_after: float = 3600.0
    allow_signup: bool = False
    path_apps: Literal["redirect", "sandboxed", "trusted"] = Field(
        default="redirect",
        description=(
            "Path-based app URLs (/apps/OWNER/NAME/) are on the platform's own origin, where an app's "
            "scripts could act as the visitor. 'redirect' (default): send them to the app's host URL "
            "(OWNER-NAME.APPS_DOMAIN); needs wildcard DNS for APPS_DOMAIN, ideally a registrable domain "
            "of its own (like hf.space next to huggingface.co) so apps cannot set cookies for the platform. "
            "'sandboxed': serve them with a CSP sandbox (opaque origin, app cookies dropped): static pages "
            "and plain forms work; Gradio and Streamlit front ends do not (no localStorage/cookies, every "
            "fetch is cross-origin from the 'null' origin), WebSockets connect without cookies. "
            "'trusted': serve them like host URLs, only for sites where every space owner is trusted with "
            "the platform's pages (their scripts run as the visitor). In every mode the space page embeds "
            "and links the host URL, and private apps there sign visitors in through /auth/app."
        ),
    )
    data_plane: Literal["auto", "haproxy", "python"] = Field(
        default="auto", description="What carries visitors' traffic to running public spaces under `spaceport serve`: "
        "'haproxy' (/usr/sbin/haproxy in front, programmed at run time), 'python' (the built-in proxy only), "
        "'auto' (haproxy when installed, else python with a warning)")
    app_session_max_age: int = Field(
        default=3600, ge=60,
        description="Seconds a private space's sign-in cookie on its host URL lasts before the visitor is "
                    "signed in again through the platform (access revoked meanwhile ends by then at the latest)",
    )
    embedded_worker: bool = True
    # Abuse limits (issue 19): each answer names the limit it hit and the setting that raises it.
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body of API calls and "
                                "forms (JSON, YAML checks, logins); larger ones get 413 before they are read")
    max_commit_bytes: int = Field(default=104_857_600, ge=1024, description="Largest body of the commit API "
                                  "(`create_commit` / `upload_file` NDJSON, base64 inside) and preupload calls")
    max_push_bytes: int = Field(default=2_147_483_648, ge=1024, description="Largest git request body (a push's "
                                "pack, a fetch's negotiation)")
    max_owner_repo_bytes: int = Field(default=10_737_418_240, ge=0, description="Disk space all the space "
                                      "repositories of one owner (a user or an organization) may take together, "
                                      "measured on disk at every push, commit and duplicate; a write that would "
                                      "pass it is refused and nothing of it kept. 0: no limit")
    max_repo_bytes: int = Field(default=0, ge=0, description="Disk space one space's repository may take (checked "
                                "like max_owner_repo_bytes); 0 (default): only the owner's limit applies")
    max_lfs_object_bytes: int = Field(default=5_368_709_120, ge=1024, description="Largest Git LFS object one "
                                      "upload may send (its bytes also count against max_owner_repo_bytes)")
    lfs_action_seconds: int = Field(default=3600, ge=60, description="How long the signed upload/download/verify "
                                    "links of a Git LFS batch answer stay valid")
    streams_per_client: int = Field(default=20, ge=1, description="Log streams (SSE) one client address may hold "
                                    "open at once; more get 429")
    streams_per_space: int = Field(default=100, ge=1, description="Log streams (SSE) open at once on one space; "
                                   "more get 429")
    login_attempts: int = Field(default=10, ge=1, description="Failed logins allowed per user name and client "
                                "address within login_window; more get 429 with Retry-After")
    login_window: float = Field(default=300.0, gt=0, description="Seconds over which failed logins are counted")
    max_json_depth: int = Field(default=64, ge=2, description="Deepest nesting accepted in JSON and NDJSON request "
                                "bodies; deeper ones get 400")
    space_disk_bytes: int = Field(default=5 * 1024**3, ge=1024 * 1024, description="Disk one running space may "
                                  "write (its home, /home/user/app, its container layer); past it the app is "
                                  "stopped with RUNTIME_ERROR saying so")
    space_disk_check_interval: float = Field(default=10.0, ge=0, description="Seconds between measurements of each "
                                             "running app's disk use (0: every reconcile pass)")
    storage_small_bytes: int = Field(default=20 * 10**9, ge=0, description="Size of the small persistent storage "
                                     "tier (/data of request_space_storage); 0: not offered")
    storage_medium_bytes: int = Field(default=150 * 10**9, ge=0, description="Size of the medium persistent "
                                      "storage tier; 0: not offered")
    storage_large_bytes: int = Field(default=10**12, ge=0, description="Size of the large persistent storage "
                                     "tier; 0: not offered")
    gc_interval: float = Field(default=3600.0, gt=0, description="How often beat collects build sources, venvs "
                               "and images no space's current or running build uses")
    # Kubernetes runtime (SPACEPORT_RUNTIME=kubernetes): how this site's spaces run on the cluster.
    kubernetes_namespace_prefix: str = Field(
        default="spaceport-", pattern=r"^[a-z][a-z0-9-]{0,29}$",
        description="Owner namespaces are PREFIX+OWNER; also names this installation on the cluster (label "
                    "spaceport.site): it only lists and sweeps objects with its own label, so two installations "
                    "on one cluster need different prefixes")
    kubernetes_image_pull_secrets: str = Field(
        default="", description="Secrets (comma separated) pods pull app images with; each must exist in "
                                "every owner namespace (node-level registry credentials need none)")
    kubernetes_runtime_class: str = Field(default="", description="runtimeClassName of app pods (e.g. gvisor, "
                                          "kata, nvidia); empty: the cluster's default")
    kubernetes_storage_class: str = Field(
        default="", description="StorageClass of a per-pod ephemeral volume for the app's ~/.cache (model "
                                "downloads), sized like the flavor's disk; empty: the node's own disk")
    zerogpu_device_api_url: str = Field(
        default="", description="ZeroGPU: the URL apps reach this site's device API at (SPACES_ZERO_DEVICE_API_URL "
                                "gets /zerogpu/<instance capability>/ appended); empty: its own listener "
                                "on 169.254.231.1 that only zero-* sandboxes reach (PUBLIC_URL when not root)")
    zerogpu_queue_timeout: float = Field(default=60.0, gt=0, description="ZeroGPU: seconds a call waits in the queue "
                                         "for a free GPU before it fails (the `spaces` package says 'after 60s')")
    gc_grace: float = Field(default=3600.0, ge=0, description="Seconds an unused build source, venv or image is "
                            "kept before it is collected")

    @field_validator("registry")
    @classmethod
    def _registry_address(cls, value: str) -> str:
        """A bad SPACEPORT_REGISTRY fails at start, not at the first build's push."""
        return registry_prefix(value) if value.strip() else ""

    def model_post_init(self, _context: object) -> None:
        check_environment()  # not a ValueError: pydantic would fold it into a ValidationError
        self.data_dir = self.data_dir.expanduser().resolve()

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'spaceport.db'}"

    @cached_property
    def celery_broker(self) -> str:
        return self.broker_url or "spacefs://"

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def runtime_dir(self) -> Path:
        return self.data_dir / "runtime"

    @property
    def volumes_dir(self) -> Path:
        return self.data_dir / "volumes"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @cached_property
    def key(self) -> str:
        """The platform key: SECRET_KEY, or one generated once and kept (0600) in the data dir."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip()

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.repos_dir, self.artifacts_dir, self.logs_dir, self.runtime_dir, self.broker_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
