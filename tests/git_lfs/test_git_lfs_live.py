"""Git LFS end to end against a live Spaceport: git + git-lfs push and clone, huggingface_hub uploads
through LFS, the file-resolve API, duplicate by reference, and a built static space serving LFS bytes."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.hf_api import RepoFile

from tests.git_lfs.helpers import blob, lfs_repo, sha256, stored_objects
from tests.support.gitrepo import git, push, remote
from tests.support.server import LiveServer
from tests.support.spaces import wait_stage

STATIC_README = "---\ntitle: LFS static\nsdk: static\n---\n"


def bare(server: LiveServer, owner: str, name: str) -> Path:
    return server.data_dir / "repos" / owner / f"{name}.git"


def test_git_lfs_push_then_clone_elsewhere_gets_the_content(server: LiveServer, tokens: dict[str, str],
                                                            tmp_path: Path) -> None:
    weights, png = blob("weights", 300_000), blob("png", 5_000)
    work = lfs_repo(tmp_path / "work", {"README.md": STATIC_README.encode(), "model.bin": weights,
                                        "img/logo.png": png})
    url = remote(server.url, "alice", "lfs-push", "alice", tokens["alice"])
    pushed = git(work, "push", url, "main")
    assert "locking" not in pushed.stderr.lower() or "does not support" in pushed.stderr  # never fails on locks
    # git holds pointers; the owner's store holds the objects, content-addressed
    held = git(bare(server, "alice", "lfs-push"), "show", "main:model.bin").stdout
    assert held.startswith("version https://git-lfs.github.com/spec/v1") and sha256(weights) in held
    assert {p.name for p in stored_objects(server.data_dir, "alice")} >= {sha256(weights), sha256(png)}
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", remote(server.url, "alice", "lfs-push", "alice", tokens["alice"]), str(clone))
    assert (clone / "model.bin").read_bytes() == weights and (clone / "img/logo.png").read_bytes() == png
    # the public space clones without credentials too
    anon = tmp_path / "anon"
    git(tmp_path, "clone", "-q", remote(server.url, "alice", "lfs-push"), str(anon))
    assert (anon / "model.bin").read_bytes() == weights


def test_resolve_api_serves_lfs_files_as_their_content(server: LiveServer, tokens: dict[str, str],
                                                       tmp_path: Path) -> None:
    data = blob("resolve", 70_000)
    work = lfs_repo(tmp_path / "work", {"README.md": STATIC_README.encode(), "data.bin": data})
    push(work, remote(server.url, "alice", "lfs-resolve", "alice", tokens["alice"]))
    got = httpx.get(f"{server.url}/spaces/alice/lfs-resolve/resolve/main/data.bin", timeout=30)
    assert got.status_code == 200 and got.content == data and got.headers["content-length"] == str(len(data))
    path = hf_hub_download("alice/lfs-resolve", "data.bin", repo_type="space", endpoint=server.url,
                           cache_dir=str(tmp_path / "cache"), token=False)
    assert Path(path).read_bytes() == data


@pytest.fixture
def no_xet(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub uploads by Xet whenever hf_xet is installed; Spaceport serves LFS (HF_HUB_DISABLE_XET=1)."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


def test_an_upload_by_xet_is_refused_saying_how_to_use_lfs(server: LiveServer, tokens: dict[str, str]) -> None:
    """With hf_xet installed (it is here) and Xet not disabled, the client asks for a Xet token first; hf_xet
    (Rust) shows only the status and URL, the answer's body and X-Error-Message say what to do."""
    hf = HfApi(endpoint=server.url, token=tokens["alice"])
    hf.create_repo("alice/lfs-xet", repo_type="space", space_sdk="static")
    with pytest.raises(ConnectionError, match=r"501 Not Implemented.*xet-write-token"):
        hf.upload_file(path_or_fileobj=blob("xet", 11 * 1024 * 1024), path_in_repo="big.dat",
                       repo_id="alice/lfs-xet", repo_type="space")
    answer = httpx.get(f"{server.url}/api/spaces/alice/lfs-xet/xet-write-token/main", timeout=30,
                       headers={"authorization": f"Bearer {tokens['alice']}"})
    assert answer.status_code == 501 and "HF_HUB_DISABLE_XET=1" in answer.json()["error"]
    assert "HF_HUB_DISABLE_XET=1" in answer.headers["x-error-message"]


@pytest.mark.usefixtures("no_xet")
def test_hub_upload_file_goes_through_lfs(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    hf = HfApi(endpoint=server.url, token=tokens["alice"])
    hf.create_repo("alice/lfs-hub", repo_type="space", space_sdk="static")
    hf.upload_file(path_or_fileobj=b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", path_in_repo=".gitattributes",
                   repo_id="alice/lfs-hub", repo_type="space")
    data = blob("hub", 200_000)  # tracked by .gitattributes: preupload answers "lfs"
    hf.upload_file(path_or_fileobj=data, path_in_repo="weights/model.safetensors", repo_id="alice/lfs-hub",
                   repo_type="space")
    big = blob("big", 11 * 1024 * 1024)  # over 10 MB: LFS whatever the attributes say
    hf.upload_file(path_or_fileobj=big, path_in_repo="big.dat", repo_id="alice/lfs-hub", repo_type="space")
    held = git(bare(server, "alice", "lfs-hub"), "show", "main:weights/model.safetensors").stdout
    assert held == f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256(data)}\nsize {len(data)}\n"
    assert sha256(big) in git(bare(server, "alice", "lfs-hub"), "show", "main:big.dat").stdout
    listed = {f.path: f for f in hf.list_repo_tree("alice/lfs-hub", repo_type="space", recursive=True)
              if isinstance(f, RepoFile)}
    model = listed["weights/model.safetensors"]
    assert model.size == len(data) and model.lfs is not None and model.lfs.sha256 == sha256(data)
    path = hf.hf_hub_download("alice/lfs-hub", "weights/model.safetensors", repo_type="space",
                              cache_dir=str(tmp_path / "cache"))
    assert Path(path).read_bytes() == data
    clone = tmp_path / "clone"  # and git-lfs finds the objects the Hub client uploaded
    git(tmp_path, "clone", "-q", remote(server.url, "alice", "lfs-hub"), str(clone))
    assert (clone / "weights/model.safetensors").read_bytes() == data
    got = httpx.get(f"{server.url}/spaces/alice/lfs-hub/resolve/main/big.dat", timeout=60)  # untracked: by resolve
    assert got.content == big


def test_duplicate_copies_lfs_objects_by_reference(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    data = blob("dup", 40_000)
    work = lfs_repo(tmp_path / "work", {"README.md": STATIC_README.encode(), "asset.bin": data})
    push(work, remote(server.url, "alice", "lfs-source", "alice", tokens["alice"]))
    HfApi(endpoint=server.url, token=tokens["bob"]).duplicate_repo("alice/lfs-source", "bob/lfs-copy", repo_type="space")
    original = server.data_dir / "repos" / "alice" / "lfs" / "objects" / sha256(data)[:2] / sha256(data)[2:4] / sha256(data)
    copied = server.data_dir / "repos" / "bob" / "lfs" / "objects" / sha256(data)[:2] / sha256(data)[2:4] / sha256(data)
    assert os.stat(original).st_ino == os.stat(copied).st_ino  # one object on disk, two stores
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", remote(server.url, "bob", "lfs-copy"), str(clone))
    assert (clone / "asset.bin").read_bytes() == data


def test_built_static_space_serves_the_real_png(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + blob("logo", 20_000)
    files = {"README.md": STATIC_README.encode(), "index.html": b"<img src='logo.png'>", "logo.png": png}
    push(lfs_repo(tmp_path / "work", files), remote(server.url, "alice", "lfs-static", "alice", tokens["alice"]))
    wait_stage(server, "alice/lfs-static", {"RUNNING"})
    got = httpx.get(f"{server.url}/logo.png", headers={"Host": f"alice-lfs-static.localhost:{server.port}"}, timeout=60)
    assert got.status_code == 200 and got.content == png
