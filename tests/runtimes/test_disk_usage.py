"""What an app writes to disk is measured as the disk it really takes (issue 19).

The measure (`localstate.disk_usage`) counts allocated blocks: a sparse file counts what it holds, not
its apparent size; an empty file still costs a block (inodes are disk too); hard links count once;
symlinks are never followed. On the local runtime it covers the app's home, the writable layer of
/home/user/app and its tmp; the docker runtime reports the container's writable layer (SizeRw).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from builder.artifact import ImageArtifact, VenvArtifact
from controller.domain.units import format_bytes
from controller.runtimes.base import Endpoint, HardwareSpec, InstanceSpec, State
from controller.runtimes.health import wait_healthy
from controller.runtimes.local import LocalRuntime
from controller.runtimes.localstate import BLOCK, MAX_DEPTH, TooDeep, disk_usage
from controller.services.diskquota import over_quota_message
from tests.runtimes.conftest import copy_app

MiB = 1024 * 1024
HARDWARE = HardwareSpec(cpu=1.0, memory_mb=256, pids=64, disk_mb=64)


# ----------------------------------------------------------------------------- the measure itself
def test_sparse_file_counts_its_allocated_blocks_not_its_apparent_size(tmp_path: Path) -> None:
    hole = tmp_path / "hole"
    with hole.open("wb") as handle:
        handle.truncate(1024 * MiB)  # 1 GiB apparent, nothing allocated
    assert disk_usage([tmp_path]) <= 2 * BLOCK
    with hole.open("r+b") as handle:
        for index in range(4):  # 4 MiB of data spread over the 1 GiB
            handle.seek(index * 256 * MiB)
            handle.write(os.urandom(MiB))
    assert 4 * MiB <= disk_usage([tmp_path]) < 5 * MiB


def test_many_empty_files_cost_a_block_each(tmp_path: Path) -> None:
    for index in range(2000):
        (tmp_path / f"f{index}").touch()
    assert disk_usage([tmp_path]) >= 2000 * BLOCK


def test_hard_links_count_once_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(os.urandom(2 * MiB))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "data").write_bytes(os.urandom(MiB))
    for index in range(5):
        os.link(tree / "data", tree / f"link{index}")
    (tree / "to-big").symlink_to(outside / "big")
    (tree / "to-outside").symlink_to(outside, target_is_directory=True)
    assert MiB <= disk_usage([tree]) < MiB + 10 * BLOCK


def test_counting_stops_soon_after_the_limit(tmp_path: Path) -> None:
    for folder in range(20):
        (tmp_path / f"d{folder}").mkdir()
        (tmp_path / f"d{folder}" / "data").write_bytes(os.urandom(MiB))
    assert disk_usage([tmp_path]) >= 20 * MiB
    assert 2 * MiB < disk_usage([tmp_path], stop_after=2 * MiB) < 5 * MiB


def nest(root: Path, levels: int, data: bytes = b"") -> None:
    """levels directories of 200-character names below root (by descriptors: the path is too long to open)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("d" * 200, dir_fd=fd)
            child = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        out = os.open("data", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)


def test_files_below_paths_longer_than_path_max_are_counted(tmp_path: Path) -> None:
    nest(tmp_path, 40, os.urandom(MiB))  # a path of 8,000+ characters: open() by name would fail
    assert disk_usage([tmp_path]) >= MiB + 40 * BLOCK


def test_a_tree_deeper_than_the_walk_goes_is_refused(tmp_path: Path) -> None:
    nest(tmp_path, MAX_DEPTH + 5)
    with pytest.raises(TooDeep):
        disk_usage([tmp_path])


def test_missing_roots_count_nothing(tmp_path: Path) -> None:
    assert disk_usage([tmp_path / "gone", tmp_path / "also-gone"]) == 0


def test_the_message_says_what_happened_and_what_to_do() -> None:
    assert format_bytes(5 * 1024**3) == "5 GiB" and format_bytes(int(5.3 * 1024**3)) == "5.3 GiB"
    assert format_bytes(2 * MiB) == "2 MiB" and format_bytes(1536) == "1.5 KiB" and format_bytes(12) == "12 bytes"
    assert over_quota_message(int(5.3 * 1024**3), 5 * 1024**3) == (
        "The app wrote 5.3 GiB to its disk, more than the 5 GiB per space (SPACEPORT_SPACE_DISK_BYTES); it was "
        "stopped. Write less, or ask an admin to raise the limit.")


# ----------------------------------------------------------------------------- a sandboxed app, attacking
@pytest.fixture
async def hog(tmp_path: Path, system_venv: Path, sandbox_ok: None) -> AsyncIterator[tuple[LocalRuntime, Endpoint]]:
    source = copy_app("diskhog", tmp_path / "src" / "diskhog")
    runtime = LocalRuntime(tmp_path / "state", sandbox="bwrap", protected_paths=[tmp_path / "data"], stop_timeout=5)
    spec = InstanceSpec(name="hog", space_id="mallory/hog", hardware=HARDWARE,
                        artifact=VenvArtifact(system_venv, source, ("python", "app.py"), 7860))  # fmt: skip
    endpoint = await runtime.start(spec)
    try:
        assert await wait_healthy(endpoint, timeout=60), (await runtime.status("hog")).message
        yield runtime, endpoint
    finally:
        with contextlib.suppress(Exception):
            await runtime.remove("hog")


async def ask(endpoint: Endpoint, path: str) -> str:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(endpoint.url + path) as response,
    ):
        text = await response.text()
        assert response.status == 200, text
        return text


async def test_sandboxed_app_writes_are_counted_wherever_it_writes(hog: tuple[LocalRuntime, Endpoint]) -> None:
    runtime, endpoint = hog
    base = await runtime.disk_usage("hog")
    assert base is not None and base < 256 * 1024, "the sandbox's own setup (chown of the code) must cost ~nothing"

    async def grew(path: str) -> int:
        before = await runtime.disk_usage("hog")
        await ask(endpoint, path)
        after = await runtime.disk_usage("hog")
        assert before is not None and after is not None
        return after - before

    assert await grew("/hole") < 4 * BLOCK  # 32 MiB apparent, nothing allocated: nothing taken
    assert MiB <= await grew("/sparse?kb=1024") < MiB + 8 * BLOCK  # 1 MiB inside a 32 MiB file: 1 MiB
    assert await grew("/many?n=500") >= 500 * BLOCK  # empty files are not free
    assert await grew("/write?where=app&kb=1024") >= MiB  # /home/user/app: the overlay's upper layer
    assert await grew("/write?where=home&kb=1024") >= MiB
    assert await grew("/write?where=tmp&kb=1024") < 4 * BLOCK  # a size-limited tmpfs in memory, not disk
    assert await grew("/deep?n=30&kb=1024") >= MiB + 30 * BLOCK  # hidden past PATH_MAX: still counted
    total = await runtime.disk_usage("hog")
    assert total is not None and total >= 4 * MiB + 500 * BLOCK
    capped = await runtime.disk_usage("hog", stop_after=MiB)
    assert capped is not None and capped > MiB
    await ask(endpoint, f"/deep?n={MAX_DEPTH + 5}&kb=0")
    with pytest.raises(TooDeep):
        await runtime.disk_usage("hog")

    await runtime.stop("hog")
    await runtime.discard_writes("hog")
    after = await runtime.disk_usage("hog")
    assert after is not None and after < 64 * 1024
    assert (await runtime.status("hog")).state is State.EXITED
    assert await runtime.disk_usage("nothing-here") is None


async def test_discard_writes_leaves_a_running_app_alone(hog: tuple[LocalRuntime, Endpoint]) -> None:
    runtime, endpoint = hog
    await ask(endpoint, "/write?where=home&kb=512")
    await runtime.discard_writes("hog")
    used = await runtime.disk_usage("hog")
    assert used is not None and used >= 512 * 1024


# ----------------------------------------------------------------------------- docker: the writable layer
@pytest.mark.docker
async def test_docker_reports_the_containers_writable_layer(docker_host: str, test_image: str) -> None:
    from controller.runtimes.docker import DockerRuntime

    runtime = DockerRuntime(docker_host, stop_timeout=5, site="disktest")
    spec = InstanceSpec(name="hog", space_id="mallory/hog", hardware=HARDWARE, artifact=ImageArtifact(test_image, 7860))
    try:
        await runtime.start(spec)
        container = runtime.client.containers.get("spaceport-disktest-hog")
        before = await runtime.disk_usage("hog")
        assert before is not None and before < 64 * 1024
        done = await asyncio.to_thread(container.exec_run, ["sh", "-c", "head -c 3145728 /dev/urandom > /tmp/blob"])
        assert done.exit_code == 0, done.output
        after = await runtime.disk_usage("hog")
        assert after is not None and after - before >= 3 * MiB
        assert await runtime.disk_usage("nothing-here") is None
    finally:
        await runtime.remove("hog")
