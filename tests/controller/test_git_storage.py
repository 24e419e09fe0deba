"""Bare-repo storage runs git isolated from the host's config: a system-wide git-lfs install (Debian's
package writes a required `filter.lfs` into /etc/gitconfig) must not break `git archive` of a commit that
holds an LFS pointer, and git's own stderr reaches the error when git does fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from controller.git import storage

POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 12345\n"
)
CJK_NAME = "模型/权重 说明.txt"


def _plain_git(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=False)


@pytest.fixture
def lfs_host_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A host whose system and global git config carry a required lfs filter, as Debian's git-lfs writes."""
    system = tmp_path / "etc-gitconfig"
    if shutil.which("git-lfs"):  # the real thing: what `git lfs install --system` writes
        subprocess.run(["git", "lfs", "install", "--system", "--skip-repo"], check=True, capture_output=True,
                       env={**os.environ, "GIT_CONFIG_SYSTEM": str(system)})
    else:  # same shape; the smudge fails like git-lfs does without the object
        system.write_text('[filter "lfs"]\n\trequired = true\n\tsmudge = false %f\n\tclean = cat\n')
    assert "required = true" in system.read_text()
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(system, home / ".gitconfig")
    monkeypatch.setenv("GIT_CONFIG_SYSTEM", str(system))
    monkeypatch.setenv("HOME", str(home))
    return system


@pytest.fixture
def lfs_repo(tmp_path: Path) -> tuple[Path, str]:
    """A bare space repo whose main commit holds an LFS pointer (and a CJK file name), pushed without lfs."""
    bare = tmp_path / "repos" / "alice" / "lfs.git"
    storage.init_bare(bare)
    work = tmp_path / "work"
    (work / "模型").mkdir(parents=True)
    (work / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    (work / "weights.bin").write_text(POINTER)
    (work / CJK_NAME).write_text("说明\n")
    (work / "app.py").write_text("print('hi')\n")
    clean = storage.git_env()  # build the fixture itself without any lfs filter
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "lfs pointer"],
                 ["push", "-q", str(bare), "main"]):
        result = _plain_git(*args, cwd=work, env=clean)
        assert result.returncode == 0, result.stderr
    sha = storage.head_sha(bare)
    assert sha is not None
    return bare, sha


def test_host_lfs_filter_breaks_plain_git_archive(lfs_host_config: Path, lfs_repo: tuple[Path, str]) -> None:
    """The control: with the host's config, git archive of that commit really fails (so the next test can)."""
    bare, sha = lfs_repo
    result = _plain_git("-C", str(bare), "archive", "--format=tar", sha, cwd=bare, env=dict(os.environ))
    assert result.returncode != 0
    assert b"smudge filter lfs failed" in result.stderr or b"lfs" in result.stderr


def test_export_tree_ignores_host_git_config(lfs_host_config: Path, lfs_repo: tuple[Path, str], tmp_path: Path) -> None:
    bare, sha = lfs_repo
    dest = tmp_path / "export"
    storage.export_tree(bare, sha, dest)
    assert (dest / "weights.bin").read_text() == POINTER  # the pointer as committed, no smudge attempted
    assert (dest / CJK_NAME).read_text() == "说明\n"
    assert CJK_NAME in storage.list_files(bare, sha)
    assert storage.read_file(bare, sha, CJK_NAME) == "说明\n".encode()


def test_git_env_is_fixed_and_carries_nothing_from_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_DIR", "/somewhere/else")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    env = storage.git_env()
    assert env["GIT_CONFIG_NOSYSTEM"] == "1" and env["GIT_CONFIG_GLOBAL"] == os.devnull
    assert env["GIT_ATTR_NOSYSTEM"] == "1" and not any(Path(env["HOME"]).iterdir())
    assert "GIT_DIR" not in env and "HTTPS_PROXY" not in env


def test_git_failure_carries_its_stderr(lfs_repo: tuple[Path, str], tmp_path: Path) -> None:
    bare, _ = lfs_repo
    with pytest.raises(RuntimeError) as failure:
        storage.export_tree(bare, "0" * 40, tmp_path / "nowhere")
    message = str(failure.value)
    assert "archive" in message and ("not a valid object name" in message or "not a tree object" in message), message
