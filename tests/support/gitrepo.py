"""Helpers to make app repos and push them with the real git client."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_TERMINAL_PROMPT": "0", "HOME": "/tmp",
}


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GIT_ENV}
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def make_repo(path: Path, files: dict[str, str] | Path) -> Path:
    """A work tree with one commit on main holding files (a dict, or a fixture folder to copy)."""
    if isinstance(files, Path):
        shutil.copytree(files, path)
    else:
        path.mkdir(parents=True)
        for name, text in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(text)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def commit_file(repo: Path, name: str, text: str, message: str = "change") -> str:
    (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def remote(base_url: str, owner: str, name: str, user: str | None = None, token: str | None = None) -> str:
    scheme, _, rest = base_url.partition("://")
    cred = f"{user}:{token}@" if user and token else ""
    return f"{scheme}://{cred}{rest}/spaces/{owner}/{name}"


def push(repo: Path, url: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return git(repo, "push", "-q", url, "main", check=check)
