"""Bare repository storage: one bare repo per space under DATA_DIR/repos/OWNER/NAME.git.

Every git command here runs isolated from the host's git configuration (`git_env()`): no system or
global config or attributes (a system-wide git-lfs install adds a required `filter.lfs` there, which
made `git archive` of any commit holding an LFS pointer fail with `smudge filter lfs failed`), an empty
HOME, no prompts, a fixed PATH and locale. Only the bare repo's own config (written by `configure`)
applies. Failures carry git's stderr. Exports and file reads resolve Git LFS pointers to the stored objects
(controller.git.lfs), so what is built and served is the real file.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from controller.domain.errors import NotFound
from controller.domain.naming import validate_name
from controller.git import lfs

log = logging.getLogger(__name__)

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


GIT_PATH = "/usr/local/bin:/usr/bin:/bin"


def _empty_home() -> str:
    home = Path(tempfile.gettempdir()) / f"spaceport-git-home-{os.getuid()}"
    home.mkdir(mode=0o700, exist_ok=True)
    return str(home)


def git_env() -> dict[str, str]:
    """The whole environment of every git command: nothing from the host's config or the caller's env."""
    home = _empty_home()
    return {
        "PATH": GIT_PATH, "HOME": home, "XDG_CONFIG_HOME": home, "LC_ALL": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "1",
    }


def run_git(argv: list[str], *, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """`git ARGV` isolated from host config; on failure (check) a RuntimeError carrying git's stderr."""
    result = subprocess.run(["git", *argv], input=input, capture_output=True, check=False, env=git_env())
    if check and result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"git {' '.join(argv[2:] if argv[:1] == ['-C'] else argv)} failed (exit {result.returncode}): {stderr}")
    return result


def git(repo: Path, *args: str, input: bytes | None = None, check: bool = True) -> str:
    return run_git(["-C", str(repo), *args], input=input, check=check).stdout.decode(errors="replace")


_REFUSE_MAIN_DELETION = """# Spaceport: main is what the space runs; it may move (even by force) but not disappear.
while read old new ref; do
  case "$new" in *[!0]*) continue ;; esac
  if [ "$ref" = "refs/heads/main" ]; then
    echo "Spaceport refuses to delete main: it is what this space runs. Push a new commit to main instead, or delete the space." >&2
    exit 1
  fi
done
"""
PRE_RECEIVE = "#!/bin/sh\n" + _REFUSE_MAIN_DELETION + "exit 0\n"


def push_hook(python: str = sys.executable) -> str:
    """The pre-receive hook of pushes through Spaceport's git HTTP (core.hooksPath): main stays, and the
    owner's repositories stay within their storage limits (controller.git.quota, limits from the env),
    and every Git LFS pointer it brings names an uploaded object (controller.git.hook). This interpreter,
    isolated (-I), imports the checks from this very source tree."""
    root = str(Path(__file__).resolve().parents[2])
    code = f"import sys; sys.path.insert(0, {root!r}); from controller.git.hook import main; sys.exit(main())"
    checks = f"exec {shlex.quote(python)} -I -c {shlex.quote(code)}"
    return ("#!/bin/sh\nupdates=$(cat)\nprintf '%s\\n' \"$updates\" | {\n" + _REFUSE_MAIN_DELETION + "} || exit 1\n"
            f"printf '%s\\n' \"$updates\" | {checks}\n")


def install_hooks(hooks_dir: Path) -> Path:
    """Write the push hooks into hooks_dir unless they are there already (atomically; cheap to repeat)."""
    hook, text = hooks_dir / "pre-receive", push_hook()
    if hook.is_file() and os.access(hook, os.X_OK) and hook.read_text() == text:
        return hooks_dir
    hooks_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=hooks_dir, prefix=".pre-receive-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, hook)
    return hooks_dir


def init_bare(path: Path) -> None:
    if (path / "HEAD").exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    run_git(["init", "--bare", "-q", "--template=", "-b", "main", str(path)])  # no sample hooks (~80 KB)
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


def has_refs(path: Path) -> bool:
    """Whether the repo holds any ref at all (a first push that was refused leaves none), or another push
    is receiving into it right now (its quarantine exists): either way it is not an orphan to remove."""
    if not (path / "HEAD").exists():
        return False
    if any((path / "objects").glob("tmp_objdir-incoming-*")):
        return True
    return bool(git(path, "for-each-ref", "--count=1", "--format=%(refname)").strip())


def export_tree(path: Path, sha: str, dest: Path) -> None:
    """Write the commit's files into dest (a fresh directory), like a checkout without .git."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = run_git(["-C", str(path), "archive", "--format=tar", sha])
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, capture_output=True, check=False,
                           env={"PATH": GIT_PATH, "LC_ALL": "C.UTF-8"})
    if untar.returncode != 0:
        raise RuntimeError(f"tar -x of commit {sha[:12]} failed: {untar.stderr.decode(errors='replace').strip()}")
    missing = lfs.smudge_tree(path, sha, dest)  # builds and runtimes see real contents, never LFS pointers
    if missing:
        log.warning("commit %s of %s holds LFS pointers whose objects are not stored (left as pointers): %s",
                    sha[:12], path, ", ".join(missing[:5]))


def read_file(path: Path, sha: str, file: str, limit: int = 1_000_000) -> bytes | None:
    """A file's first `limit` bytes at a commit (an LFS file's real content), or None if it is not there."""
    result = run_git(["-C", str(path), "show", f"{sha}:{file}"], check=False)
    if result.returncode != 0:
        return None
    pointer = lfs.parse(result.stdout)
    store = lfs.ObjectStore.of_repo(path)
    if pointer is not None and store.has(pointer):
        with store.path(pointer.oid).open("rb") as handle:
            return handle.read(limit)
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
    run_git(["clone", "--bare", "-q", "--no-local", "--template=", str(source), str(dest)])
    configure(dest)
    git(dest, "remote", "remove", "origin", check=False)
