"""Bytecode for sealed venvs, compiled once per source file and shared by every venv of the site.

Sandboxed apps see their venv read-only, so its `.pyc` files must exist before it is used (else every
start recompiles Gradio in memory). uv's `--compile-bytecode` compiled every file of every new venv: about
5,000 files (a minute of CPU on these machines) for each Gradio environment, although most of them are
the very sources an earlier environment already had.

Here, after `seal` (root-owned, no build process left):
1. every regular `.py` of site-packages is hashed (sha256);
2. a source whose bytecode the store already holds (`<store>/<2>/<sha256>-pyc-<magic>`) gets a hardlink to
   it in its `__pycache__`;
3. the rest is compiled by the env's own interpreter (`-I -S`: no site, no `.pth`, no owner code) inside
   the build sandbox, into a scratch directory only that run can see; root then places each result and
   names it in the store for the next venv.

The `.pyc` files are unchecked-hash pycs (PEP 552): their bytes depend only on the source and the
interpreter's magic number, never on a file's mtime or path (`co_filename` is fixed up at import), so one
compiled file serves every venv with the same source, and shared `.py` sources (`share_files`) cannot make
them stale. A store entry is only ever made from this module's own compile of exactly those source bytes:
a `.pyc` found in a venv (a wheel may ship any) is replaced, never stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from builder.proc import Result

# Run by the env's interpreter with -I -S inside the sandbox: argv[1] the job file, argv[2] the output dir.
COMPILE_SCRIPT = """
import json, os, py_compile, sys
from concurrent.futures import ProcessPoolExecutor
jobs = json.load(open(sys.argv[1]))
out = sys.argv[2]
def one(item):
    index, source, display = item
    try:
        py_compile.compile(source, cfile=os.path.join(out, str(index) + ".pyc"), dfile=display, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        return 1
    except Exception:
        return 0  # a file that does not compile (Python 2 syntax in a package's tests): imports fall back
workers = max(1, min(len(os.sched_getaffinity(0)), int(sys.argv[3])))
items = [(i, s, d) for i, (s, d) in enumerate(jobs)]
if workers == 1 or len(items) < 64:
    list(map(one, items))
else:
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(one, items, chunksize=32))
"""
# In the build's scratch dir: what the sandboxed compile reads (SCRIPT, JOBS) and the only place it writes (OUT).
SCRIPT, JOBS, OUT = "bytecode-script.py", "bytecode-jobs.json", "bytecode"
PROBE = "import importlib.util, sys; print(importlib.util.MAGIC_NUMBER.hex(), sys.implementation.cache_tag)"
UNCHECKED_HASH = 0b01  # the pyc flags word (PEP 552): hash-based, source not checked
# Run (wrapped in the sandbox) with the compile argv; returns how it ended.
Runner = Callable[[list[str]], Result]


@dataclasses.dataclass(frozen=True)
class Compiled:
    shared: int = 0  # sources whose bytecode an earlier venv had compiled: hardlinked
    compiled: int = 0  # sources compiled now (and named in the store)
    failed: int = 0  # sources that do not compile: left without bytecode


@dataclasses.dataclass(frozen=True)
class Interpreter:
    magic: str  # importlib.util.MAGIC_NUMBER, hex: a pyc is only valid for the same magic
    tag: str  # sys.implementation.cache_tag: the `__pycache__/NAME.TAG.pyc` name


def probe(interpreter: Path) -> Interpreter:
    """The magic number and cache tag of the env's base interpreter (a trusted host Python, run -I -S)."""
    out = subprocess.run([str(interpreter), "-I", "-S", "-c", PROBE], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    return Interpreter(out[0], out[1])


def sources(venv: Path) -> Iterator[Path]:
    """Regular `.py` files of the venv's site-packages, never through a link (the build chose them)."""
    for lib in sorted((venv / "lib").glob("python*/site-packages")):
        if lib.is_symlink() or not lib.is_dir():
            continue
        for top, dirs, names in os.walk(lib, followlinks=False):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in names:
                path = Path(top) / name
                if name.endswith(".py") and stat.S_ISREG(path.lstat().st_mode):
                    yield path


def compile_venv(venv: Path, store: Path, work: Path, interpreter: Path, run: Runner, workers: int, *,
                 sealed: bool = True) -> Compiled:
    """Give every source of the `venv` its bytecode: from `store` when known, else compiled by `run` (the
    sandbox) into `work` (writable inside it) and then added to `store`.

    A venv that is not `sealed` (an unsandboxed build's: its files stay writable by the app) reads the store
    by copy, never by link, and adds nothing to it: what it holds never becomes another venv's bytecode."""
    target = probe(interpreter)
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    missing: list[tuple[Path, str]] = []
    shared = 0
    for source in sources(venv):
        digest = _digest(source)
        if _place(_entry(store, digest, target), _pyc_path(source, target), link=sealed):
            shared += 1
        else:
            missing.append((source, digest))
    if not missing:
        return Compiled(shared=shared)
    made = _compile(missing, venv, work, interpreter, run, workers)
    compiled = 0
    for index, (source, digest) in enumerate(missing):
        entry = _entry(store, digest, target) if sealed else None
        if _adopt(made / f"{index}.pyc", target, entry, _pyc_path(source, target)):
            compiled += 1
    return Compiled(shared=shared, compiled=compiled, failed=len(missing) - compiled)


def _compile(missing: list[tuple[Path, str]], venv: Path, work: Path, interpreter: Path, run: Runner,
             workers: int) -> Path:
    jobs, script, out = work / JOBS, work / SCRIPT, work / OUT
    jobs.write_text(json.dumps([[str(source), str(source.relative_to(venv))] for source, _ in missing]))
    script.write_text(COMPILE_SCRIPT)
    run([str(interpreter), "-I", "-S", str(script), str(jobs), str(out), str(workers)])
    return out


def _adopt(result: Path, target: Interpreter, entry: Path | None, pyc: Path) -> bool:
    """Copy one compiled file (made by the build uid) to `pyc` as a root-owned file, if it is a pyc of the
    right magic, then name it in the store as `entry` (an entry that exists already, from a concurrent
    build, is kept; None: not stored)."""
    try:
        info = result.lstat()
    except FileNotFoundError:
        return False  # did not compile
    if not stat.S_ISREG(info.st_mode):
        return False
    data = result.read_bytes()
    if len(data) < 16 or data[:4].hex() != target.magic or int.from_bytes(data[4:8], "little") != UNCHECKED_HASH:
        return False
    tmp = _temp_in(pyc.parent)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, pyc)
    if entry is None:
        return True
    entry.parent.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(OSError):  # FileExistsError (a concurrent build named it first), EMLINK
        os.link(pyc, entry)
    return True


def _place(entry: Path, pyc: Path, *, link: bool = True) -> bool:
    """Hardlink (or with `link` False, copy) the store's `entry` as `pyc` (whatever stood at `pyc` is
    replaced); False if the store has no such entry (or it was pruned meanwhile)."""
    if not entry.is_file():
        return False
    tmp = _temp_in(pyc.parent)
    if link:
        try:
            os.link(entry, tmp)
        except FileNotFoundError:
            return False
        except OSError:  # EMLINK (a popular file's link count is full): a copy of its own
            link = False
    if not link:
        try:
            data = entry.read_bytes()
        except FileNotFoundError:
            return False
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    os.replace(tmp, pyc)
    return True


def _temp_in(cache: Path) -> Path:
    """A fresh name in a real `__pycache__` directory (made if need be; a link or file the build left
    there is removed, never followed)."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISDIR(cache.lstat().st_mode):
            cache.unlink()
    cache.mkdir(mode=0o755, exist_ok=True)
    return cache / f".{uuid.uuid4().hex}.tmp"


def _pyc_path(source: Path, target: Interpreter) -> Path:
    return source.parent / "__pycache__" / f"{source.stem}.{target.tag}.pyc"


def _entry(store: Path, digest: str, target: Interpreter) -> Path:
    return store / digest[:2] / f"{digest}-pyc-{target.magic}"


def _digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
