"""Bare repository storage: one bare repo per space under DATA_DIR/repos/OWNER/NAME.git."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from controller.domain.errors import NotFound
from controller.domain.naming import validate_name

MAIN = "refs/heads/main"


@dataclass(frozen=True)
class Commit:
    sha: str
    title: str
    author: str
    date: datetime


def repo_path(repos_dir: Path, owner: str, name: str) -> Path:
    """The bare repo path; validated names only, so no request can escape the repos dir."""
    validate_name(owner, "owner")
    validate_name(name, "space name")
    path = (repos_dir / owner / f"{name}.git").resolve()
    if repos_dir.resolve() not in path.parents:
        raise NotFound("No such repository.")
    return path


def git(repo: Path, *args: str, input: bytes | None = None, check: bool = True) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode(errors="replace")


PRE_RECEIVE = """#!/bin/sh
# Spaceport: main is what the space runs; it may move (even by force) but not disappear.
while read old new ref; do
  case "$new" in *[!0]*) continue ;; esac
  if [ "$ref" = "refs/heads/main" ]; then
    echo "Spaceport refuses to delete main: it is what this space runs. Push a new commit to main instead, or delete the space." >&2
    exit 1
  fi
done
exit 0
"""


def init_bare(path: Path) -> None:
    if (path / "HEAD").exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(path)], check=True)
    configure(path)


def configure(path: Path) -> None:
    """Settings and hooks every space repo has (new or copied)."""
    git(path, "config", "http.receivepack", "true")
    git(path, "config", "receive.denyDeleteCurrent", "refuse")
    git(path, "config", "uploadpack.allowAnySHA1InWant", "true")
    hook = path / "hooks" / "pre-receive"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(PRE_RECEIVE)
    hook.chmod(0o755)


def delete_repo(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def head_sha(path: Path, ref: str = MAIN) -> str | None:
    if not (path / "HEAD").exists():
        return None
    out = git(path, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False).strip()
    return out or None


def export_tree(path: Path, sha: str, dest: Path) -> None:
    """Write the commit's files into dest (a fresh directory), like a checkout without .git."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(path), "archive", "--format=tar", sha], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


def read_file(path: Path, sha: str, file: str, limit: int = 1_000_000) -> bytes | None:
    result = subprocess.run(["git", "-C", str(path), "show", f"{sha}:{file}"], capture_output=True, check=False)
    if result.returncode != 0:
        return None
    return result.stdout[:limit]


def list_files(path: Path, sha: str) -> list[str]:
    out = git(path, "ls-tree", "-r", "--name-only", "-z", sha)
    return [f for f in out.split("\0") if f]


def commits(path: Path, ref: str = MAIN, limit: int = 50) -> list[Commit]:
    if head_sha(path, ref) is None:
        return []
    out = git(path, "log", f"-n{limit}", "--format=%H%x1f%s%x1f%an%x1f%ct%x1e", ref)
    result = []
    for record in out.split("\x1e"):
        fields = record.strip().split("\x1f")
        if len(fields) == 4:
            sha, title, author, ts = fields
            result.append(Commit(sha, title, author, datetime.fromtimestamp(int(ts), UTC)))
    return result


def copy_repo(source: Path, dest: Path) -> None:
    """Server-side copy with full history (used by duplicate)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--bare", "-q", "--no-local", str(source), str(dest)], check=True)
    configure(dest)
    git(dest, "remote", "remove", "origin", check=False)
