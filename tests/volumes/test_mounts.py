"""How the local and docker runtimes mount a space's storage and volumes (issue 16), without starting apps:
the bwrap arguments, the sandbox's own refusals, the docker binds, the spec identity, and the host-side
hand-over of /data to the app's uid, on the real filesystem (links the app left are never followed).
The live journeys are tests/volumes/test_live.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.artifact import ImageArtifact, VenvArtifact
from controller.runtimes.appenv import spec_hash
from controller.runtimes.base import InstanceSpec, Mount
from controller.runtimes.docker import build_create_kwargs
from controller.runtimes.local import _link_mount
from controller.runtimes.sandbox import SandboxPlan, bwrap_argv, check_mount, give_storage

STORAGE = Mount(source="/srv/data/volumes/storage/" + "a" * 32, target="/data", read_only=False, claim="c")
WEIGHTS = Mount(source="/srv/data/volumes/exports/alice/weights/" + "b" * 40, target="/models")
PROTECTED = (Path("/srv/data/repos"), Path("/srv/data/spaceport.db"), Path("/srv/data/runtime"))


def plan(*mounts: Mount) -> SandboxPlan:
    return SandboxPlan(uid=100_001, home=Path("/srv/data/runtime/i/home"), etc_dir=Path("/srv/data/runtime/i/etc"),
                       ro_paths=(), protected=PROTECTED, tmp_size_bytes=1 << 20, mounts=mounts)


def pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg == flag]


def test_bwrap_binds_storage_read_write_and_volumes_read_only() -> None:
    argv = bwrap_argv(plan(STORAGE, WEIGHTS), ["/bin/true"], exists=lambda _p: False)
    assert (STORAGE.source, "/data") in pairs(argv, "--bind")
    assert (WEIGHTS.source, "/models") in pairs(argv, "--ro-bind")
    assert (WEIGHTS.source, "/models") not in pairs(argv, "--bind")
    assert argv.index("--bind") < argv.index("--")  # bound by bwrap, before the command
    assert {a for a in argv if a.startswith("/srv/data/volumes")} == {STORAGE.source, WEIGHTS.source}  # nothing else


@pytest.mark.parametrize("mount, error", [
    (Mount(source="/srv/data", target="/data", read_only=False), "holds a protected path"),
    (Mount(source="/srv/data/repos/bob", target="/models"), "is or holds a protected path"),
    (Mount(source="/", target="/models"), "must be an absolute directory"),
    (Mount(source="relative/dir", target="/models"), "must be an absolute directory"),
    (Mount(source="/srv/x/../data/repos", target="/models"), "must be an absolute directory"),
    (Mount(source="/srv/ok", target="/etc/ssl"), "system directory"),
    (Mount(source="/srv/ok", target="/home/user/app"), "system directory"),
    (Mount(source="/srv/ok", target="/usr"), "system directory"),
    (Mount(source="/srv/ok", target="/"), "normalized absolute path"),
    (Mount(source="/srv/ok", target="/models/../etc"), "normalized absolute path"),
    (Mount(source="/srv/ok", target="models"), "normalized absolute path"),
])  # fmt: skip
def test_the_sandbox_refuses_mounts_that_would_expose_or_shadow_something(mount: Mount, error: str) -> None:
    with pytest.raises(RuntimeError, match=error):
        check_mount(mount, PROTECTED)
    with pytest.raises(RuntimeError, match=error):
        bwrap_argv(plan(mount), ["/bin/true"], exists=lambda _p: False)


def image_spec(*mounts: Mount) -> InstanceSpec:
    return InstanceSpec(name="sp-alice-demo-1-0", space_id="alice/demo",
                        artifact=ImageArtifact(image="spaceport/alice-demo:abc", port=7860), mounts=mounts)


def test_docker_binds_storage_rw_and_volumes_ro() -> None:
    kwargs = build_create_kwargs(image_spec(STORAGE, WEIGHTS))
    assert kwargs["volumes"] == {STORAGE.source: {"bind": "/data", "mode": "rw"},
                                 WEIGHTS.source: {"bind": "/models", "mode": "ro"}}
    assert kwargs["user"] == "1000:1000"
    assert "volumes" not in build_create_kwargs(image_spec())


def test_mounts_are_part_of_what_runs_so_a_changed_mount_replaces_the_instance() -> None:
    plain, with_storage = image_spec(), image_spec(STORAGE)
    assert spec_hash(plain) != spec_hash(with_storage)
    other_revision = Mount(source=WEIGHTS.source.replace("b", "c"), target="/models")
    assert spec_hash(image_spec(STORAGE, WEIGHTS)) != spec_hash(image_spec(STORAGE, other_revision))
    venv = VenvArtifact(venv=Path("/v"), source=Path("/s"), command=("python", "app.py"), port=7860)
    spec = InstanceSpec(name="n", space_id="alice/demo", artifact=venv)
    assert spec_hash(spec) == spec_hash(InstanceSpec(name="n", space_id="alice/demo", artifact=venv, mounts=()))


def test_give_storage_hands_over_the_tree_without_following_links(tmp_path: Path) -> None:
    storage, outside = tmp_path / "storage", tmp_path / "outside"
    storage.mkdir(mode=0o755)
    outside.mkdir()
    (outside / "victim").write_text("root's")
    (storage / "sub").mkdir()
    (storage / "sub" / "file").write_text("app's")
    (storage / "to-dir").symlink_to(outside, target_is_directory=True)
    (storage / "sub" / "to-file").symlink_to(outside / "victim")
    give_storage(storage, 100_123)
    for path in (storage, storage / "sub", storage / "sub" / "file", storage / "to-dir", storage / "sub" / "to-file"):
        assert os.lstat(path).st_uid == 100_123 and os.lstat(path).st_gid == 100_123, path
    assert oct(storage.stat().st_mode & 0o777) == "0o700"
    for path in (outside, outside / "victim"):
        assert os.lstat(path).st_uid == os.getuid(), path  # nothing outside the tree changed owner
    give_storage(storage, 1000, 1000)  # another runtime's user: handed over again
    assert os.lstat(storage / "sub" / "file").st_uid == 1000


def test_give_storage_refuses_a_link_in_place_of_the_directory(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "storage").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RuntimeError, match="is not a directory"):
        give_storage(tmp_path / "storage", 100_123)
    assert (tmp_path / "elsewhere").stat().st_uid == os.getuid()


def test_unsandboxed_mounts_are_links_in_the_home(tmp_path: Path) -> None:
    home, storage, weights = tmp_path / "home", tmp_path / "storage", tmp_path / "weights"
    for path in (home, storage, weights):
        path.mkdir()
    (home / "data").write_text("the app's own file, before storage existed")
    (home / "mnt").symlink_to(tmp_path)  # a link the app planted where a parent directory goes
    _link_mount(home, Mount(source=str(storage), target="/data", read_only=False))
    _link_mount(home, Mount(source=str(weights), target="/mnt/weights"))
    assert os.readlink(home / "data") == str(storage)
    assert (home / "data.replaced-by-mount").read_text().startswith("the app's own file")
    assert (home / "mnt").is_dir() and not (home / "mnt").is_symlink()
    assert os.readlink(home / "mnt" / "weights") == str(weights)
    assert not (tmp_path / "weights" / "weights").exists()
    _link_mount(home, Mount(source=str(storage), target="/data", read_only=False))  # again: unchanged
    assert os.readlink(home / "data") == str(storage)
