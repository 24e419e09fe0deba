"""Git LFS throughput (issue 16): upload and download through a live Spaceport versus a plain file copy.

    . ./.test-env.sh && .venv/bin/python bench/lfs.py [--sizes 16 128] [--runs 2]

For each size (MiB) of incompressible content: a plain file copy on the same disk (the floor), the batch API
driven directly (POST batch + PUT upload + verify; POST batch + GET download, httpx streaming), and the real
clients: `git push` of a commit holding the file (git-lfs's pre-push upload plus the pack) and `git clone`
(checkout with git-lfs smudge). Fresh content every run, so nothing is deduplicated. Median of the runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _live import log, print_table

from tests.support.gitrepo import git, remote
from tests.support.server import LiveServer, make_server

MiB = 1024 * 1024
MEDIA = "application/vnd.git-lfs+json"


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MiB))
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def batch_action(server: LiveServer, token: str, space: str, op: str, oid: str, size: int) -> dict[str, dict[str, str]]:
    body = {"operation": op, "transfers": ["basic"], "objects": [{"oid": oid, "size": size}]}
    answer = httpx.post(f"{server.url}/spaces/{space}.git/info/lfs/objects/batch", json=body, timeout=60,
                        headers={"Authorization": f"Bearer {token}", "Accept": MEDIA, "Content-Type": MEDIA})
    answer.raise_for_status()
    actions: dict[str, dict[str, str]] = answer.json()["objects"][0]["actions"]
    return actions


def api_upload(server: LiveServer, token: str, space: str, path: Path, oid: str) -> None:
    actions = batch_action(server, token, space, "upload", oid, path.stat().st_size)
    with path.open("rb") as handle:
        httpx.put(actions["upload"]["href"], content=iter(lambda: handle.read(MiB), b""), timeout=600).raise_for_status()
    httpx.post(actions["verify"]["href"], json={"oid": oid, "size": path.stat().st_size}, timeout=60).raise_for_status()


def api_download(server: LiveServer, token: str, space: str, oid: str, size: int, dest: Path) -> None:
    href = batch_action(server, token, space, "download", oid, size)["download"]["href"]
    with httpx.stream("GET", href, timeout=600) as got, dest.open("wb") as out:
        got.raise_for_status()
        for chunk in got.iter_bytes(MiB):
            out.write(chunk)


def one_run(server: LiveServer, token: str, work: Path, size: int, run: int) -> dict[str, float]:
    """Seconds per operation for one fresh file of `size` bytes."""
    src = work / f"src-{size}-{run}.bin"
    oid = random_file(src, size)
    times = {"plain file copy": timed(lambda: shutil.copyfile(src, work / "copy.bin"))}
    space = f"bench-{size // MiB}-{run}"
    repo = work / space
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "lfs", "install", "--local")
    git(repo, "lfs", "track", "*.bin")
    (repo / "README.md").write_text("---\nsdk: static\n---\n")
    shutil.copyfile(src, repo / "weights.bin")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench")
    url = remote(server.url, "bench", space, "bench", token)
    times["git push (git-lfs upload)"] = timed(lambda: git(repo, "push", "-q", url, "main"))
    times["git clone (git-lfs download)"] = timed(lambda: git(work, "clone", "-q", url, str(work / f"{space}-clone")))
    assert (work / f"{space}-clone" / "weights.bin").stat().st_size == size
    other = work / f"api-{size}-{run}.bin"
    other_oid = random_file(other, size)
    times["batch API upload (PUT + verify)"] = timed(lambda: api_upload(server, token, f"bench/{space}", other, other_oid))
    times["batch API download (GET)"] = timed(lambda: api_download(server, token, f"bench/{space}", oid, size, work / "dl.bin"))
    for leftover in (src, other, work / "copy.bin", work / "dl.bin"):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(repo)
    shutil.rmtree(work / f"{space}-clone")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 128], help="file sizes in MiB")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("git-lfs") is None:
        raise SystemExit("git-lfs is not installed (apt-get install git-lfs)")
    with tempfile.TemporaryDirectory(prefix="spaceport-bench-lfs-") as tmp:
        server = make_server(Path(tmp), SPACEPORT_MAX_OWNER_REPO_BYTES="0").start()
        try:
            token = server.create_user("bench")
            rows = []
            for size_mib in args.sizes:
                runs = [one_run(server, token, Path(tmp), size_mib * MiB, run) for run in range(args.runs)]
                log(f"{size_mib} MiB done")
                copy = statistics.median(r["plain file copy"] for r in runs)
                for name in runs[0]:
                    seconds = statistics.median(r[name] for r in runs)
                    rate = size_mib / seconds if seconds > 0 else float("inf")
                    rows.append([name, f"{size_mib}", f"{seconds:.3f}", f"{rate:.0f}", f"{seconds / copy:.1f}x"])
        finally:
            server.close()
    print_table(f"Git LFS throughput, median of {args.runs} runs (MiB/s; 'vs copy' = time / plain copy time)",
                ["operation", "MiB", "seconds", "MiB/s", "vs copy"], rows)
    print(f"\ngit {subprocess.run(['git', 'version'], capture_output=True, text=True).stdout.split()[-1]}, "
          f"{subprocess.run(['git', 'lfs', 'version'], capture_output=True, text=True).stdout.split()[0]}")


if __name__ == "__main__":
    main()
