"""Corpus benchmark: deploy real public Space repos on a live Spaceport and see which ones run (issue 21).

    .venv/bin/python bench/corpus.py [CORPUS_DIR] [--runtime local|nosandbox|docker] [--jobs N]
                                     [--only PATTERN[,PATTERN]] [--timeout S] [--json PATH] [--keep]
    .venv/bin/python bench/corpus.py checkout [--mirrors DIR]      # (re)create CORPUS_DIR from bench/corpus.yaml
    .venv/bin/python bench/corpus.py table RESULTS.json [MORE.json]  # the table of (merged, interrupted) runs

The corpus is third-party code, so it lives outside the repo (default /work/corpus/OWNER__NAME/, one plain
work tree per repo at the commit pinned in bench/corpus.yaml; `checkout` makes them from local bare mirrors
or from GitHub). For every repo (or those matching --only: fnmatch patterns or substrings of OWNER__NAME or
OWNER/NAME) one real `spaceport serve` (shared by all repos of the run) gets the repo pushed as a fresh space:
a new git repo made from the checkout with one commit, pushed to corpus/NAME. The bench waits for a terminal
stage (or --timeout), records push->RUNNING seconds, then GETs the app through the proxy with a host-based
URL (Host: SLUG.localhost:PORT) and checks that it serves the app (200 and a marker: a gradio page,
a streamlit page, an html page whose first local asset also answers 200, any 200 for docker). On failure
the cause is the space's errorMessage, else the last meaningful line of the run log / build log (the
traceback's last line); both logs are saved next to the JSON. Each space is paused after it is measured (its app stopped) unless --keep.

Prints: repo | sdk | version | stage | push->RUNNING s | UI | cause, then RUNNING / UI ok / total, overall
and restricted to the repos that need nothing from the internet at run time (manifest field
needs_internet_at_runtime), and within those to the repos that also need nothing at build time
(needs_internet_at_build) and have no Git LFS pointers whose objects the corpus lacks (lfs_pointers; the
server refuses a push of those). Writes all results as JSON (--json) so that runs can be compared.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from _live import LiveServer, Variant, live_server, log, prepare, print_table, variants

from tests.support.gitrepo import remote
from tests.support.spaces import runtime

BENCH = Path(__file__).resolve().parent
MANIFEST = BENCH / "corpus.yaml"
DEFAULT_CORPUS = Path("/work/corpus")
DEFAULT_MIRRORS = Path("/work/.mirror")
OWNER = "corpus"
VARIANT_KEYS = {"local": "local (sandbox)", "nosandbox": "local (no sandbox)", "docker": "docker"}
INTERMEDIATE = {"BUILDING", "APP_STARTING", "RUNNING_BUILDING", "RUNNING_APP_STARTING", "DELETING"}
ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)|error|ERROR|fatal|FATAL)\b[:\s]")
NOISE = re.compile(r"^\s*($|={3,}|-{3,}|\^+$|~+$|File \"|Traceback \(most recent call last\)|During handling)")
GIT_ISOLATED = {
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "corpus bench", "GIT_AUTHOR_EMAIL": "corpus@example.invalid",
    "GIT_COMMITTER_NAME": "corpus bench", "GIT_COMMITTER_EMAIL": "corpus@example.invalid",
}


@dataclass(frozen=True)
class Entry:
    """One repo of the manifest."""

    repo: str  # owner/name on GitHub
    commit: str
    sdk: str
    sdk_version: str
    needs_internet: bool
    subdir: str = ""  # the space is this folder of the repo ("" = the whole repo)
    why: str = ""
    needs_internet_build: bool = False  # downloads from a non-registry host while building
    lfs_pointers: bool = False  # some files are Git LFS pointers whose objects the corpus lacks

    @property
    def key(self) -> str:
        return self.repo.replace("/", "__")

    @property
    def space_name(self) -> str:
        """A valid space name from the repo name (letters, digits, '-', '_', '.')."""
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", self.repo.split("/", 1)[1]).strip("-._")
        return re.sub(r"\.{2,}", ".", name)[:80] or "space"


@dataclass
class Result:
    """What one deploy did; the JSON record of a run."""

    repo: str
    sdk: str
    sdk_version: str
    needs_internet: bool
    needs_internet_build: bool = False
    lfs_pointers: bool = False
    stage: str = "—"
    running_s: float | None = None
    terminal_s: float | None = None
    ui: str = "—"  # "ok", "skipped", or why not
    ui_ok: bool = False
    cause: str = ""
    error_message: str = ""
    space: str = ""
    stages: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- manifest

def load_manifest(path: Path = MANIFEST) -> list[Entry]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = []
    for item in data["repos"]:
        internet = item.get("needs_internet_at_runtime") or {}
        at_build = item.get("needs_internet_at_build") or {}
        entries.append(Entry(
            repo=str(item["repo"]), commit=str(item["commit"]), sdk=str(item.get("sdk") or ""),
            sdk_version=str(item.get("sdk_version") or ""), needs_internet=bool(internet.get("value")),
            subdir=str(item.get("subdir") or ""), why=str(item.get("why") or ""),
            needs_internet_build=bool(at_build.get("value")), lfs_pointers=bool(item.get("lfs_pointers")),
        ))
    return entries


def selected(entries: Iterable[Entry], only: str) -> list[Entry]:
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    if not patterns:
        return list(entries)

    def match(entry: Entry) -> bool:
        names = (entry.key.lower(), entry.repo.lower())
        return any(fnmatch.fnmatch(n, p.lower()) or p.lower() in n for p in patterns for n in names)

    return [e for e in entries if match(e)]


# ---------------------------------------------------------------------------------------------- checkout

def git(cwd: Path, *args: str, git_dir: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
    """git with no system/global config (no host LFS filters or credential helpers), raising on failure."""
    cmd = ["git", *([f"--git-dir={git_dir}"] if git_dir else []), *args]
    result = subprocess.run(cmd, cwd=cwd, env={**os.environ, **GIT_ISOLATED}, capture_output=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace').strip()[-1500:]}")
    return result


def checkout(entry: Entry, corpus: Path, mirrors: Path) -> str:
    """Make CORPUS/OWNER__NAME: the repo's tree at the pinned commit (from a bare mirror, else GitHub)."""
    target = corpus / entry.key
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    mirror = mirrors / entry.repo.replace("/", "+") / "repo"
    with tempfile.TemporaryDirectory(prefix="corpus-checkout-") as tmp:
        if not mirror.is_dir():
            mirror = Path(tmp) / "clone.git"
            git(Path(tmp), "clone", "--bare", "--quiet", f"https://github.com/{entry.repo}.git", str(mirror))
        archive = Path(tmp) / "tree.tar"
        git(Path(tmp), "archive", "-o", str(archive), entry.commit, *([entry.subdir] if entry.subdir else []),
            git_dir=mirror)
        strip = len(Path(entry.subdir).parts) if entry.subdir else 0
        subprocess.run(["tar", "-x", "-f", str(archive), "-C", str(target), f"--strip-components={strip}"],
                       check=True)
    return str(target)


# ---------------------------------------------------------------------------------------------- deploy

def fresh_repo(source: Path, work: Path) -> Path:
    """A new git repo holding the checkout's files in one commit on main (the source's .git, if any, left out)."""
    repo = work / source.name
    shutil.copytree(source, repo, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"corpus: {source.name}")
    return repo


def push_cause(error: str) -> str:
    """The server's own refusal (`remote: ...`) when git printed one, else git's last line."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    remote = [line.split("remote:", 1)[1].strip() for line in lines if "remote:" in line]
    return ((remote[0] if remote else lines[-1]) if lines else error)[:300]


def sse_lines(server: LiveServer, path: str, token: str) -> list[str]:
    """The text lines of one non-following SSE log endpoint."""
    with contextlib.suppress(httpx.HTTPError):
        response = httpx.get(f"{server.url}{path}", params={"follow": "false"}, timeout=60,
                             headers={"authorization": f"Bearer {token}"})
        lines = []
        for raw in response.text.splitlines():
            if raw.startswith("data: "):
                with contextlib.suppress(ValueError):
                    lines.extend(str(json.loads(raw[6:]).get("data", "")).splitlines())
        return lines
    return []


def last_meaningful(lines: Sequence[str]) -> str:
    """The traceback's last line / the last error-looking line, else the last non-noise line."""
    clean = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line).rstrip() for line in lines]
    for line in reversed(clean):
        if ERROR_LINE.match(line):
            return line.strip()[:300]
    for line in reversed(clean):
        if not NOISE.match(line):
            return line.strip()[:300]
    return ""


def save_logs(server: LiveServer, space: str, token: str, logs_dir: Path | None, key: str) -> tuple[list[str], list[str]]:
    """The space's build and run logs (also written to LOGS_DIR/KEY.build.log / .run.log when given)."""
    build = sse_lines(server, f"/api/spaces/{space}/logs/build", token)
    run = [ln for ln in sse_lines(server, f"/api/spaces/{space}/logs/run", token)
           if "The app has not started yet" not in ln]
    if logs_dir is not None:
        logs_dir.mkdir(parents=True, exist_ok=True)
        (logs_dir / f"{key}.build.log").write_text("\n".join(build) + "\n", encoding="utf-8")
        (logs_dir / f"{key}.run.log").write_text("\n".join(run) + "\n", encoding="utf-8")
    return build, run


def failure_cause(error_message: str, stage: str, build: Sequence[str], run: Sequence[str]) -> str:
    """One line: the stage message's first line, plus the logs' last meaningful line when it adds something."""
    lines = [ln.strip() for ln in error_message.splitlines() if ln.strip()]
    head = lines[0][:200] if lines else ""
    detail = last_meaningful(lines[1:]) if len(lines) > 1 else ""
    found = last_meaningful(run) if stage != "BUILD_ERROR" else ""
    found = found or detail or last_meaningful(build)
    if head and found and found not in head:
        return f"{head} | {found}"
    return head or found


class _Assets(html.parser.HTMLParser):
    """The local (relative or root-absolute) src/href references of an html page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            local = value and not re.match(r"^([a-z][a-z0-9+.-]*:|//|#)", value, re.I)
            if name in ("src", "href") and tag in ("script", "link", "img") and local and value:
                self.refs.append(value)


def host_get(server: LiveServer, slug: str, path: str, timeout: float = 60) -> httpx.Response:
    headers = {"Host": f"{slug}.localhost:{server.port}", "Accept": "text/html,*/*"}
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=timeout, follow_redirects=True)


def check_ui(server: LiveServer, slug: str, sdk: str, attempts: int = 6) -> str:
    """'ok' when the app's page through the proxy is the app; else what came instead."""
    verdict = "no answer"
    for attempt in range(attempts):
        if attempt:
            time.sleep(5)
        try:
            response = host_get(server, slug, "/")
        except httpx.HTTPError as exc:
            verdict = f"{type(exc).__name__}"
            continue
        body = response.text
        if response.status_code != 200:
            verdict = f"HTTP {response.status_code}: {last_meaningful(body.splitlines())[:80]}"
            continue
        verdict = page_verdict(server, slug, sdk, body)
        if verdict == "ok":
            return verdict
    return verdict


def page_verdict(server: LiveServer, slug: str, sdk: str, body: str) -> str:
    lowered = body.lower()
    if sdk == "gradio":
        return "ok" if "gradio" in lowered else "200 without a gradio page"
    if sdk == "streamlit":
        return "ok" if "streamlit" in lowered else "200 without a streamlit page"
    if sdk == "static":
        if "<html" not in lowered and "<!doctype" not in lowered and "<body" not in lowered:
            return "200 without html"
        parser = _Assets()
        with contextlib.suppress(Exception):
            parser.feed(body)
        for ref in parser.refs[:1]:
            path = ref if ref.startswith("/") else "/" + ref.lstrip("./")
            try:
                status = host_get(server, slug, path).status_code
            except httpx.HTTPError as exc:
                return f"asset {ref}: {type(exc).__name__}"
            if status != 200:
                return f"asset {ref}: HTTP {status}"
        return "ok"
    return "ok" if body.strip() else "200 with an empty body"


def space_slug(server: LiveServer, space: str, token: str) -> str:
    info = httpx.get(f"{server.url}/api/spaces/{space}", timeout=30, headers={"authorization": f"Bearer {token}"})
    return str(info.json().get("subdomain") or "")


def wait_terminal(server: LiveServer, space: str, token: str, sha: str, start: float, timeout: float,
                  result: Result) -> dict[str, object]:
    """Poll the runtime until it is about this commit and not in an intermediate stage; note the stages seen."""
    deadline = start + timeout
    last: dict[str, object] = {}
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            last = runtime(server, space, token)
        stage = str(last.get("stage") or "")
        if stage and (not result.stages or result.stages[-1] != stage):
            result.stages.append(stage)
        if stage == "RUNNING" and result.running_s is None and last.get("sha") == sha:
            result.running_s = round(time.time() - start, 1)
        if last.get("sha") == sha and stage and stage not in INTERMEDIATE:
            result.terminal_s = round(time.time() - start, 1)
            return last
        time.sleep(1)
    last = dict(last, stage=f"TIMEOUT ({last.get('stage')})")
    return last


def deploy(server: LiveServer, token: str, entry: Entry, corpus: Path, work: Path, timeout: float,
           keep: bool, logs_dir: Path | None = None) -> Result:
    result = Result(entry.repo, entry.sdk, entry.sdk_version, entry.needs_internet, entry.needs_internet_build,
                    entry.lfs_pointers)
    source = corpus / entry.key
    if not source.is_dir():
        result.stage, result.cause = "MISSING", f"no checkout at {source} (run `corpus.py checkout`)"
        return result
    name = entry.space_name
    space = result.space = f"{OWNER}/{name}"
    try:
        repo = fresh_repo(source, work)
        sha = git(repo, "rev-parse", "HEAD").stdout.decode().strip()
        start = time.time()
        git(repo, "push", "-q", remote(server.url, OWNER, name, OWNER, token), "main", timeout=900)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        result.stage, result.cause = "PUSH_FAILED", push_cause(str(exc))
        return result
    state = wait_terminal(server, space, token, sha, start, timeout, result)
    result.stage = str(state.get("stage"))
    result.error_message = str(state.get("errorMessage") or "")
    if result.stage == "RUNNING":
        result.ui = check_ui(server, space_slug(server, space, token), entry.sdk)
        result.ui_ok = result.ui == "ok"
    build, run = save_logs(server, space, token, logs_dir, entry.key)
    if not result.ui_ok:
        result.cause = failure_cause(result.error_message, result.stage, build, run)
    if not keep:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{server.url}/api/spaces/{space}/pause", timeout=60,
                       headers={"authorization": f"Bearer {token}"})
    return result


# ---------------------------------------------------------------------------------------------- report

def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def table_rows(results: Sequence[Result]) -> list[list[str]]:
    return [[r.repo, r.sdk or "—", r.sdk_version or "—", r.stage, fmt_s(r.running_s), r.ui,
             r.cause.replace("|", "¦")[:160]] for r in results]


def summary(results: Sequence[Result], runtime: str) -> list[str]:
    """RUNNING / UI ok counts. On a local runtime docker-SDK repos cannot run by design (they need
    SPACEPORT_RUNTIME=docker): they are counted apart, and the tiers are of the repos this runtime serves."""
    def line(label: str, subset: Sequence[Result]) -> str:
        running = sum(r.stage == "RUNNING" for r in subset)
        ui_ok = sum(r.ui_ok for r in subset)
        return f"{label}: RUNNING {running} / UI ok {ui_ok} / total {len(subset)}"

    lines = [line("all repos", results)]
    if runtime != "docker":
        served = [r for r in results if r.sdk != "docker"]
        lines.append(f"docker-SDK repos left out below (docker runtime only): {len(results) - len(served)}")
        lines.append(line("repos this runtime serves (gradio, streamlit, static)", served))
        results = served
    offline = [r for r in results if not r.needs_internet]
    complete = [r for r in offline if not r.needs_internet_build and not r.lfs_pointers]
    return [*lines, line("repos needing nothing from the internet at run time", offline),
            line("  of those, also nothing at build time and no missing Git LFS objects", complete)]


def tree_state() -> dict[str, object]:
    """The Spaceport commit measured and the product files changed on top of it (other work in progress)."""
    root = BENCH.parent
    with contextlib.suppress(RuntimeError, OSError):
        head = git(root, "rev-parse", "HEAD").stdout.decode().strip()
        status = git(root, "status", "--porcelain", "--", "builder", "controller", "runtime-images").stdout.decode()
        return {"commit": head, "changed": sorted(line[3:] for line in status.splitlines() if line.strip())}
    return {}


def runtime_key(names: Sequence[str]) -> str:
    """The --runtime key of results measured on the variants `names`; "docker" (count every repo) if mixed."""
    return next((key for key, name in VARIANT_KEYS.items() if list(names) == [name]), "docker")


def write_json(path: Path, variant: Variant, results: Sequence[Result], started: float,
               tree: dict[str, object] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "runtime": variant.name, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "spaceport": tree or {},
        "seconds": round(time.time() - started), "summary": summary(results, runtime_key([variant.name])),
        "results": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- main

def pick_variant(key: str) -> Variant:
    wanted = VARIANT_KEYS[key]
    variant = next(v for v in variants() if v.name == wanted)
    if variant.skip:
        raise SystemExit(f"cannot run the {variant.name} runtime: {variant.skip}")
    return variant


def run(args: argparse.Namespace) -> int:
    entries = selected(load_manifest(args.manifest), args.only)
    if not entries:
        raise SystemExit(f"no manifest entry matches --only {args.only!r}")
    variant = pick_variant(args.runtime)
    prepare(variant)
    json_path = args.json or args.corpus / f"results-{args.runtime}.json"
    logs_dir = json_path.with_suffix("").with_name(json_path.stem + "-logs")
    results: list[Result] = []
    lock = threading.Lock()
    started = time.time()
    tree = tree_state()
    log(f"{len(entries)} repos on {variant.name}, {args.jobs} at a time, timeout {args.timeout:.0f} s each")
    with live_server(variant) as (server, _), tempfile.TemporaryDirectory(prefix="corpus-push-") as tmp:
        log(f"server {server.url}, log {server.log_path}")
        token = server.create_user(OWNER)

        stop = threading.Event()

        def one(entry: Entry) -> None:
            if stop.is_set():
                return
            log(f"-> {entry.repo}")
            result = deploy(server, token, entry, args.corpus, Path(tmp), args.timeout, args.keep, logs_dir)
            log(f"<- {entry.repo}: {result.stage} {fmt_s(result.running_s)} s, UI {result.ui}"
                f"{', ' + result.cause[:200] if result.cause else ''}")
            with lock:
                results.append(result)
                write_json(json_path, variant, sorted(results, key=lambda r: r.repo.lower()), started, tree)

        pool = ThreadPoolExecutor(max_workers=max(1, args.jobs))
        try:
            list(pool.map(one, entries))
        finally:  # SIGTERM/^C: no new repo starts; the server (and its apps) stop when live_server exits
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
    results.sort(key=lambda r: [e.repo for e in entries].index(r.repo))
    report(f"Corpus on {variant.name} ({len(results)} repos, {time.time() - started:.0f} s)", results, args.runtime)
    print(f"results: {json_path} (build and run logs in {logs_dir})")
    return 0


HEADERS = ["repo", "sdk", "version", "stage", "push->RUNNING s", "UI", "cause"]


def report(title: str, results: Sequence[Result], runtime: str) -> None:
    print_table(title, HEADERS, table_rows(results))
    print()
    for text in summary(results, runtime):
        print(text)


def run_table(args: argparse.Namespace) -> int:
    """The table and summary of results files (an interrupted run's JSON too); later files override earlier
    ones per repo (a full run, then `--only` re-runs), in manifest order."""
    order = [e.repo for e in load_manifest(args.manifest)]
    merged: dict[str, Result] = {}
    runtimes = []
    for path in args.results:
        payload = json.loads(path.read_text(encoding="utf-8"))
        runtimes.append(str(payload.get("runtime")))
        for item in payload.get("results", []):
            merged[item["repo"]] = Result(**item)
    results = sorted(merged.values(), key=lambda r: order.index(r.repo) if r.repo in order else len(order))
    names = list(dict.fromkeys(runtimes))
    report(f"Corpus on {', '.join(names)} ({len(results)} repos, from "
           f"{', '.join(p.name for p in args.results)})", results, runtime_key(names))
    return 0


def run_checkout(args: argparse.Namespace) -> int:
    for entry in selected(load_manifest(args.manifest), args.only):
        try:
            log(f"{entry.repo} @ {entry.commit[:10]} -> {checkout(entry, args.corpus, args.mirrors)}")
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            log(f"{entry.repo}: {exc}")
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS, help="folder of OWNER__NAME checkouts")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--runtime", choices=sorted(VARIANT_KEYS), default="local")
    parser.add_argument("--jobs", type=int, default=1, help="repos deployed at once (the machine has 2 cores)")
    parser.add_argument("--only", default="", help="comma-separated fnmatch patterns or substrings of repo names")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per repo from push to a terminal stage")
    parser.add_argument("--json", type=Path, default=None, help="results file (default CORPUS/results-RUNTIME.json)")
    parser.add_argument("--keep", action="store_true", help="do not pause each space after measuring it (apps stay up "
                        "until the run ends)")
    parser.add_argument("--mirrors", type=Path, default=DEFAULT_MIRRORS, help="checkout: folder of OWNER+NAME/repo bare mirrors")
    if argv and argv[0] == "table":
        table = argparse.ArgumentParser(prog="corpus.py table", description="print the table of results files")
        table.add_argument("results", nargs="+", type=Path, help="JSON files written by --json (later ones win)")
        table.add_argument("--manifest", type=Path, default=MANIFEST)
        args = table.parse_args(argv[1:])
        args.command = "table"
        return args
    if argv and argv[0] == "checkout":
        args = parser.parse_args(argv[1:])
        args.command = "checkout"
    else:
        args = parser.parse_args(argv)
        args.command = "run"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("SPACEPORT_TEST_HOSTED_BUILDS", "1")  # real repos get the hosted build defaults
    if args.command == "table":
        return run_table(args)
    return run_checkout(args) if args.command == "checkout" else run(args)


if __name__ == "__main__":
    sys.exit(main())
