"""Collection of persistent storage (issue 16), on SQLite and PostgreSQL with real directories: storage no
space holds, exports no space mounts and (Kubernetes) claims no space's key names go; nothing a space holds,
nothing younger than the grace period, nothing a link points at. The delete rule and its HTTP side (who may
delete, the confirmation) are tests/volumes/test_rules.py and test_live.py."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from controller.db.models import Space
from controller.services import artifact_gc, volumes
from controller.services.platform import Platform
from tests.volumes.test_rules import make_space, push_files, space_volume

HOUR = 3600.0


def find(session: Session, space_id: str) -> Space:
    return next(s for s in session.query(Space).all() if s.space_id == space_id)


def aged(path: Path, seconds: float = 2 * HOUR) -> Path:
    past = time.time() - seconds
    os.utime(path, (past, past), follow_symlinks=False)
    return path


def storage_of(platform: Platform, owner: str, name: str, tmp: Path) -> Path:
    """A space with small storage, its directory made as a start makes it, holding OWNER's file."""
    with platform.tx() as session:
        space = make_space(session, platform, owner, name)
        volumes.request_storage(session, platform, space, "small")
        [mount] = volumes.instance_mounts(session, platform, space)
    path = Path(mount.source)
    (path / f"{owner}.txt").write_text(f"{owner}'s data")
    return aged(path)


def orphan(platform: Platform, **links: Path) -> Path:
    path = platform.settings.volumes_dir / "storage" / secrets.token_hex(16)
    path.mkdir(parents=True)
    (path / "left.txt").write_text("left behind")
    for name, target in links.items():
        (path / name).symlink_to(target)
    return aged(path)


def test_collection_removes_storage_no_space_holds_and_nothing_a_link_points_at(db_platform: Platform,
                                                                                tmp_path: Path) -> None:
    platform = db_platform
    alice = storage_of(platform, "alice", "notes", tmp_path)
    canary = tmp_path / "canary"
    canary.write_text("root's")
    old = orphan(platform, escape=alice, canary=canary, file=alice / "alice.txt")
    young = orphan(platform)
    os.utime(young)
    stranger = platform.settings.volumes_dir / "storage" / "not-a-key"  # not a directory storage makes
    stranger.mkdir()
    aged(stranger)

    dry = artifact_gc.collect(platform, grace=HOUR, dry_run=True)
    assert [(c.kind, c.ref) for c in dry.removed if c.kind == "storage"] == [("storage", str(old))]
    assert old.exists()

    report = artifact_gc.collect(platform, grace=HOUR)
    assert [(c.kind, c.ref) for c in report.removed] == [("storage", str(old))]
    assert "1 orphaned storage directories" in report.summary()
    assert not old.exists() and young.exists() and stranger.exists()
    assert (alice / "alice.txt").read_text() == "alice's data" and canary.read_text() == "root's"
    assert list((platform.settings.volumes_dir / ".trash").iterdir()) == []

    interrupted = aged(orphan(platform).rename(platform.settings.volumes_dir / ".trash" / "left-by-a-crash"))
    volumes.collect_storage(platform, grace=0)
    assert not young.exists() and alice.exists()  # a space's storage is never collected, however old
    assert not interrupted.exists()


def test_an_owner_deleting_storage_full_of_links_removes_only_their_own(db_platform: Platform,
                                                                         tmp_path: Path) -> None:
    """bob (ordinary account) fills his /data with links to alice's storage and a host file, then deletes his
    storage and lets collection run: only bob's directory goes."""
    platform = db_platform
    alice = storage_of(platform, "alice", "notes", tmp_path)
    bob = storage_of(platform, "bob", "vault", tmp_path)
    canary = tmp_path / "canary"
    canary.write_text("root's")
    (bob / "escape").symlink_to(alice)
    (bob / "file").symlink_to(alice / "alice.txt")
    (bob / "canary").symlink_to(canary)
    (bob / "sub").mkdir()
    (bob / "sub" / "deep").symlink_to(alice)
    with platform.tx() as session:
        volumes.delete_storage(session, platform, find(session, "bob/vault"))
    assert not bob.exists()
    assert volumes.collect_storage(platform, grace=0) == []
    assert sorted(p.name for p in alice.iterdir()) == ["alice.txt"]
    assert (alice / "alice.txt").read_text() == "alice's data" and canary.read_text() == "root's"


def test_exports_go_once_no_space_mounts_them(db_platform: Platform, tmp_path: Path) -> None:
    platform = db_platform
    alice = storage_of(platform, "alice", "notes", tmp_path)
    with platform.tx() as session:
        weights = make_space(session, platform, "carol", "weights")
        push_files(platform, weights, {"README.md": "w\n", "w.txt": "0.5\n"}, tmp_path)
        bob_app = make_space(session, platform, "bob", "app")
        dave_app = make_space(session, platform, "dave", "app")
        for app in (bob_app, dave_app):
            volumes.set_volumes(session, platform, app, {"volumes": [space_volume(source="carol/weights")]})
        [mount] = volumes.instance_mounts(session, platform, bob_app)
    export = Path(mount.source)
    (export / "escape").symlink_to(alice)  # what a repo's symlink becomes in an export
    aged(export)
    with platform.tx() as session:
        volumes.delete_volumes(session, platform, find(session, "bob/app"))
    assert volumes.collect_storage(platform, grace=HOUR) == []  # dave still mounts it
    with platform.tx() as session:
        [again] = volumes.instance_mounts(session, platform, find(session, "dave/app"))
        assert Path(again.source) == export
        volumes.delete_volumes(session, platform, find(session, "dave/app"))
    assert volumes.collect_storage(platform, grace=HOUR) == []  # mounted a moment ago: its age restarted
    aged(export)
    assert volumes.collect_storage(platform, grace=HOUR) == [volumes.Collected("export", str(export))]
    assert not (platform.settings.volumes_dir / "exports" / "carol").exists()  # emptied parents go too
    assert (alice / "alice.txt").read_text() == "alice's data"
    with platform.tx() as session:  # the source itself is untouched: mounting it again exports it again
        bob = find(session, "bob/app")
        volumes.set_volumes(session, platform, bob, {"volumes": [space_volume(source="carol/weights")]})
        [mount] = volumes.instance_mounts(session, platform, bob)
        assert (Path(mount.source) / "w.txt").read_text() == "0.5\n"


def test_claims_are_pruned_by_the_keys_spaces_hold(db_platform: Platform, tmp_path: Path) -> None:
    platform = db_platform
    storage_of(platform, "alice", "notes", tmp_path)
    with platform.tx() as session:
        key = find(session, "alice/notes").storage_key
        assert key
    asked: list[tuple[set[str], bool]] = []
    orphans = ["spaceport-bob/spaceport-data-gone"]

    def pruner(keep: set[str], dry_run: bool) -> list[str]:
        asked.append((keep, dry_run))
        found = list(orphans)
        if not dry_run:
            orphans.clear()
        return found

    listed = volumes.collect_storage(platform, grace=0, dry_run=True, claims=pruner)  # `gc --dry-run` lists claims too
    assert listed == [volumes.Collected("claim", "spaceport-bob/spaceport-data-gone")]
    assert orphans, "a dry run deleted a claim"
    removed = volumes.collect_storage(platform, grace=0, claims=pruner)
    kept = {f"spaceport-data-{key[:20]}"}
    assert asked == [(kept, True), (kept, False)]
    assert removed == [volumes.Collected("claim", "spaceport-bob/spaceport-data-gone")]


@pytest.mark.parametrize("name", ["../escape", "0123", "G" * 32])
def test_storage_paths_come_only_from_keys(db_platform: Platform, name: str) -> None:
    with pytest.raises(ValueError, match="not a storage key"):
        volumes.storage_dir(db_platform.settings, name)
