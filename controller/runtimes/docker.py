"""Docker runtime: one container per instance, through the docker SDK.

Containers run with --init, as uid 1000, with the environment of appenv.app_env (never the docker
client's configured proxies), no capabilities, no-new-privileges, memory/CPU/pids limits,
on the `spaceport-apps` bridge network created with inter-container communication disabled (apps
cannot reach each other) and the apps' egress policy on its bridge (netns.bridge_firewall: private,
link-local, CGNAT, reserved ranges and the host itself denied, DNS to the resolvers and the
SPACEPORT_EGRESS_ALLOW CIDRs allowed) when the engine runs on this machine, and publish their port only on 127.0.0.1 with a random host port that is
read back after every start. Instances are found by the `spaceport.instance` label, scoped by the
`spaceport.site` label (and a name prefix) so several sites or test servers can share one engine without
listing, adopting or removing each other's containers.

With a registry (SPACEPORT_REGISTRY), an image that is not on this engine is pulled from it before the
container is created (images are built and pushed on another engine, a worker's); a reference outside
the registry is never pulled (no Docker Hub lookup of `spaceport/...`).

stop() keeps the container (a later start() of the same spec is a plain `container.start()`, a fast
deep wake); remove() deletes it. start() of a spec that differs (artifact, env, hardware) from the
existing container's replaces the container.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.models.containers import Container

from builder.artifact import ImageArtifact
from builder.registry import registry_hint, split_ref
from controller.domain.naming import in_registry, registry_host
from controller.runtimes import netns
from controller.runtimes.appenv import LABEL_INSTANCE, LABEL_SPEC, app_env, instance_labels, spec_hash
from controller.runtimes.base import AppExited, Endpoint, InstanceSpec, InstanceStatus, RuntimeFailure, State
from controller.runtimes.sandbox import ASCEND_DRIVER, ASCEND_SHARED, give_storage

NETWORK = "spaceport-apps"
APP_UID = "1000:1000"
NOFILE = 8192
LABEL_SITE = "spaceport.site"
log = logging.getLogger(__name__)


def container_name(instance: str, site: str = "") -> str:
    return f"spaceport-{site}-{instance}" if site else f"spaceport-{instance}"


def site_id(data_dir: Path) -> str:
    """A short, stable id of a site (its data directory) for labels and container names."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:10]


def accelerator_kwargs(spec: InstanceSpec) -> dict[str, Any]:
    acc = spec.hardware.accelerators
    if acc is None:
        return {}
    if acc.type.startswith("nvidia"):
        request = docker.types.DeviceRequest(driver="nvidia", device_ids=list(acc.device_ids), capabilities=[["gpu"]])
        return {"device_requests": [request]}
    if acc.type.startswith("ascend"):
        nodes = [f"/dev/davinci{i}" for i in acc.device_ids] + list(ASCEND_SHARED)
        return {
            "devices": [f"{n}:{n}:rwm" for n in nodes],
            "volumes": {ASCEND_DRIVER: {"bind": ASCEND_DRIVER, "mode": "ro"}},
        }
    raise RuntimeFailure(f"unknown accelerator type {acc.type!r}")


def build_create_kwargs(spec: InstanceSpec, *, network: str = NETWORK, bind_address: str = "127.0.0.1",
                        site: str = "") -> dict[str, Any]:  # fmt: skip
    """Keyword arguments for `client.containers.create` (pure, so it is tested without devices)."""
    artifact = spec.artifact
    if not isinstance(artifact, ImageArtifact):
        raise RuntimeFailure(f"the docker runtime runs images, not {artifact.ref}")
    hw = spec.hardware
    env, _ = app_env(spec, port=artifact.port, bind="0.0.0.0")  # HOME and the workdir come from the image
    return {
        "image": artifact.image,
        "name": container_name(spec.name, site),
        "detach": True,
        "init": True,
        "user": APP_UID,
        "environment": env,
        "use_config_proxy": False,  # docker-py would copy the proxies of ~/.docker/config.json into every app
        "labels": {**instance_labels(spec), **({LABEL_SITE: site} if site else {})},
        "mem_limit": f"{hw.memory_mb}m",
        "memswap_limit": f"{hw.memory_mb}m",
        "nano_cpus": int(hw.cpu * 1_000_000_000),
        "pids_limit": hw.pids,
        "ulimits": [docker.types.Ulimit(name="nofile", soft=NOFILE, hard=NOFILE)],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "ports": {f"{artifact.port}/tcp": (bind_address, None)},
        "network": network,
        "hostname": "space",
        **accelerator_kwargs(spec),
    } | _volume_kwargs(spec)


def _volume_kwargs(spec: InstanceSpec) -> dict[str, Any]:
    """Bind mounts: the space's persistent storage read-write at /data, its volumes read-only (beside the
    Ascend driver's). The host paths are the controller's: the engine must run on the same machine (or see
    the data dir at the same path)."""
    if not spec.mounts:
        return {}
    binds = dict(accelerator_kwargs(spec).get("volumes") or {})
    for mount in spec.mounts:
        binds[mount.source] = {"bind": mount.target, "mode": "ro" if mount.read_only else "rw"}
    return {"volumes": binds}


def _pull_failure(image: str, registry: str, error: str) -> str:
    return (f"cannot pull the image {image} from the registry {registry}: {error.strip()}. The site's admin must fix "
            f"it ({registry_hint(error)}); or push again / factory-rebuild the space if the image was deleted")


def _endpoint(container: Container, bind_address: str) -> Endpoint | None:
    for bindings in (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
        for binding in bindings or []:
            if binding.get("HostPort"):
                return Endpoint(bind_address, int(binding["HostPort"]))
    return None


class DockerRuntime:
    name = "docker"

    def __init__(self, docker_host: str | None = None, *, network: str = NETWORK, bind_address: str = "127.0.0.1",
                 stop_timeout: int = 10, site: str = "", egress_allow: tuple[str, ...] | str = (),
                 registry: str = "") -> None:  # fmt: skip
        self.site = site
        self.registry = registry
        try:
            self.egress_allow = netns.parse_allow(egress_allow)
        except ValueError as exc:
            raise RuntimeFailure(f"{exc}; fix SPACEPORT_EGRESS_ALLOW") from None
        self.egress_policy = "not applied yet"
        self.client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        self.network = network
        self.bind_address = bind_address
        self.stop_timeout = stop_timeout
        self._network_ready = False

    # ---------------------------------------------------------------- contract
    async def start(self, spec: InstanceSpec) -> Endpoint:
        return await asyncio.to_thread(self._start, spec)

    async def stop(self, name: str) -> None:
        await asyncio.to_thread(self._stop, name)

    async def status(self, name: str) -> InstanceStatus:
        return await asyncio.to_thread(self._status, name)

    async def list(self) -> list[InstanceStatus]:
        return await asyncio.to_thread(self._list)

    async def freeze(self, name: str) -> None:
        await asyncio.to_thread(self._call, name, "pause")

    async def thaw(self, name: str) -> None:
        await asyncio.to_thread(self._call, name, "unpause")

    async def remove(self, name: str) -> None:
        await asyncio.to_thread(self._remove, name)

    def logs(self, name: str, follow: bool) -> AsyncIterator[str]:
        return self._logs(name, follow)

    # ---------------------------------------------------------------- disk (issue 19)
    async def disk_usage(self, name: str, stop_after: int | None = None) -> int | None:
        """Bytes in the container's writable layer (the engine's SizeRw: it walks the layer itself, summing
        file sizes); None when there is no such container. stop_after is ignored (the engine walks it all)."""
        return await asyncio.to_thread(self._disk_usage, name)

    def images_in_use(self) -> set[str]:
        """Image references and ids of this site's containers (running or stopped): never collected."""
        labels = [LABEL_INSTANCE, f"{LABEL_SITE}={self.site}"] if self.site else [LABEL_INSTANCE]
        used: set[str] = set()
        for container in self.client.containers.list(all=True, filters={"label": labels}, ignore_removed=True):
            used.add(str(container.attrs.get("Config", {}).get("Image", "")))
            used.add(str(container.attrs.get("Image", "")))
        return used - {""}

    def remove_image(self, ref: str) -> str:
        """Remove an image tag the platform built: "removed", "missing", or "in use" (never forced)."""
        try:
            self.client.images.remove(ref, force=False, noprune=False)
        except NotFound:
            return "missing"
        except APIError as exc:
            if exc.status_code == 409:
                return "in use"
            raise RuntimeFailure(f"cannot remove image {ref}: {exc.explanation or exc}") from exc
        return "removed"

    def container_id(self, name: str) -> str | None:
        container = self._get(name)
        return container.id if container else None

    def close(self) -> None:
        self.client.close()

    # ---------------------------------------------------------------- internals
    def _get(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(container_name(name, self.site))
        except NotFound:
            return None

    def ensure_network(self) -> None:
        """The apps' bridge, created once with inter-container communication disabled, and its egress
        policy installed or upgraded (once per runtime object)."""
        if self._network_ready:
            return
        if not self.client.networks.list(names=[self.network]):
            options = {"com.docker.network.bridge.enable_icc": "false"}
            with contextlib.suppress(APIError):  # another process created it meanwhile
                self.client.networks.create(self.network, driver="bridge", options=options, check_duplicate=True,
                                            labels={"spaceport.network": "apps"})  # fmt: skip
        self._egress_firewall()
        self._network_ready = True

    def bridge(self) -> str:
        """The Linux bridge of the apps' network (docker names it br-<id12> unless told otherwise)."""
        network = self.client.networks.get(self.network)
        options = network.attrs.get("Options") or {}
        return str(options.get("com.docker.network.bridge.name") or f"br-{network.id[:12]}")

    def _egress_firewall(self) -> None:
        bridge = self.bridge()
        if not Path(f"/sys/class/net/{bridge}").exists():
            self.egress_policy = f"NOT enforced: the engine's bridge {bridge} is not on this machine"
            log.warning("docker runtime: app egress policy %s (apply it on the engine's host)", self.egress_policy)
            return
        try:
            netns.bridge_firewall(bridge, self.egress_allow)
        except netns.NetworkSetupError as exc:
            raise RuntimeFailure(f"cannot install the apps' egress firewall on {bridge}: {exc}") from exc
        allowed = ", ".join(self.egress_allow) or "nothing"
        self.egress_policy = f"private/reserved ranges denied on {bridge}, allow-list: {allowed}"

    def _start(self, spec: InstanceSpec) -> Endpoint:
        container = self._get(spec.name)
        if container is not None and container.labels.get(LABEL_SPEC) != spec_hash(spec):
            container.remove(force=True)
            container = None
        try:
            if container is None:
                self._give_storage(spec)
                self.ensure_image(spec)
                self.ensure_network()
                container = self.client.containers.create(**build_create_kwargs(
                    spec, network=self.network, bind_address=self.bind_address, site=self.site))  # fmt: skip
            if container.status == "paused":
                container.unpause()
            elif container.status != "running":
                container.start()
        except APIError as exc:
            raise RuntimeFailure(f"docker could not start {spec.name}: {exc.explanation or exc}") from exc
        container.reload()
        self._listener_access(container, netns.listener_port(spec.env))  # zero-* and hf_oauth instances only
        endpoint = _endpoint(container, self.bind_address)
        if endpoint is None and container.status in ("exited", "dead"):  # it crashed at once: ports are gone
            code = container.attrs.get("State", {}).get("ExitCode")
            raise AppExited(f"{spec.name} exited with exit code {code} while starting", code)
        if endpoint is None:
            raise RuntimeFailure(f"{spec.name} started but published no port (state {container.status})")
        return endpoint

    def _give_storage(self, spec: InstanceSpec) -> None:
        """The space's storage directory owned by the container's user (uid 1000), so the app can write /data."""
        uid, _, gid = APP_UID.partition(":")
        for mount in spec.mounts:
            if not mount.read_only:
                try:
                    give_storage(Path(mount.source), int(uid), int(gid))
                except (OSError, RuntimeError) as exc:
                    raise RuntimeFailure(f"cannot mount {mount.target} for {spec.name}: {exc}") from exc

    def ensure_image(self, spec: InstanceSpec) -> None:
        """The spec's image on this engine: already there, or pulled from SPACEPORT_REGISTRY (blocking)."""
        artifact = spec.artifact
        if not isinstance(artifact, ImageArtifact):
            raise RuntimeFailure(f"the docker runtime runs images, not {artifact.ref}")
        image = artifact.image
        try:
            self.client.images.get(image)
            return
        except NotFound:
            pass
        try:
            pullable = in_registry(image, self.registry)
        except ValueError as exc:  # a malformed SPACEPORT_REGISTRY
            raise RuntimeFailure(str(exc)) from None
        if not pullable:
            where = f"under SPACEPORT_REGISTRY={self.registry}" if self.registry else "in a registry (SPACEPORT_REGISTRY is not set)"
            raise RuntimeFailure(f"the image {image} of {spec.space_id} is not on this Docker engine and not {where}, "
                                 "so it cannot be pulled: push again or factory-rebuild the space")
        self._pull(image)

    def _pull(self, image: str) -> None:
        repository, tag = split_ref(image)
        registry = registry_host(image)
        log.info("docker runtime: pulling %s from the registry %s", image, registry)
        try:
            for chunk in self.client.api.pull(repository, tag=tag, stream=True, decode=True):
                error = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
                if error:
                    raise RuntimeFailure(_pull_failure(image, registry, str(error)))
        except APIError as exc:
            raise RuntimeFailure(_pull_failure(image, registry, str(exc.explanation or exc))) from exc
        try:
            self.client.images.get(image)
        except NotFound:
            raise RuntimeFailure(_pull_failure(image, registry, "the pull ended without the image")) from None

    def _status(self, name: str) -> InstanceStatus:
        container = self._get(name)
        if container is None:
            return InstanceStatus(name, State.MISSING)
        return self._describe(name, container)

    def _describe(self, name: str, container: Container) -> InstanceStatus:
        labels = dict(container.labels)
        if container.status in ("running", "restarting"):
            return InstanceStatus(name, State.RUNNING, endpoint=_endpoint(container, self.bind_address), labels=labels)
        if container.status == "paused":
            return InstanceStatus(name, State.FROZEN, endpoint=_endpoint(container, self.bind_address), labels=labels)
        code = container.attrs.get("State", {}).get("ExitCode")
        try:
            tail = container.logs(tail=20).decode(errors="replace").strip()
        except APIError as exc:  # removed (404), or its removal under way (409), since it was listed or inspected:
            if exc.status_code not in (404, 409):  # its exit is all there is to say
                raise
            tail = ""
        return InstanceStatus(name, State.EXITED, exit_code=code, labels=labels,
                              message=f"exited with code {code}\n{tail}".strip())  # fmt: skip

    def _list(self) -> builtins.list[InstanceStatus]:
        labels = [LABEL_INSTANCE, f"{LABEL_SITE}={self.site}"] if self.site else [LABEL_INSTANCE]
        found = self.client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
        return [self._describe(c.labels[LABEL_INSTANCE], c) for c in found]

    def _call(self, name: str, action: str) -> None:
        container = self._get(name)
        if container is None:
            raise RuntimeFailure(f"{name} does not exist")
        try:
            getattr(container, action)()
        except APIError as exc:
            raise RuntimeFailure(f"cannot {action} {name}: {exc.explanation or exc}") from exc

    def _stop(self, name: str) -> None:
        container = self._get(name)
        if container is None:
            return
        if container.status == "paused":
            container.unpause()
        container.stop(timeout=self.stop_timeout)
        self._listener_access(container, None)

    def _disk_usage(self, name: str) -> int | None:
        labels = [f"{LABEL_INSTANCE}={name}", *([f"{LABEL_SITE}={self.site}"] if self.site else [])]
        found = self.client.api.containers(all=True, size=True, filters={"label": labels})  # the SDK's inspect has no size
        mine = [c for c in found if f"/{container_name(name, self.site)}" in (c.get("Names") or [])]
        size = mine[0].get("SizeRw") if mine else None
        return int(size) if isinstance(size, int) else (0 if mine else None)

    def _remove(self, name: str) -> None:
        container = self._get(name)
        if container is not None:
            self._listener_access(container, None)
            with contextlib.suppress(NotFound):
                container.remove(force=True)

    def _listener_access(self, container: Container, port: int | None) -> None:
        """The platform listener's port opened for this container's address on the apps' bridge, or
        closed (None; the rule is named after the container, so it is found once its address is gone)."""
        networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
        address = (networks.get(self.network) or {}).get("IPAddress") or ""
        try:
            bridge = self.bridge()
        except NotFound:  # the apps' network is gone: so is every rule's address
            return
        if (port is not None and not address) or not Path(f"/sys/class/net/{bridge}").exists():
            return
        try:
            netns.set_listener_access(container.name, ["-s", f"{address}/32", "-i", bridge], port)
        except netns.NetworkSetupError as exc:
            raise RuntimeFailure(f"cannot open the platform listener for {container.name}: {exc}") from exc

    async def _logs(self, name: str, follow: bool) -> AsyncIterator[str]:
        container = await asyncio.to_thread(self._get, name)
        if container is None:
            return
        stream: Iterator[bytes] = container.logs(stream=True, follow=follow)
        pending = b""
        while (chunk := await asyncio.to_thread(next, stream, b"")) != b"":
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")
