"""Bytecode compiled once per source and shared by venvs through the store (builder/bytecode.py).

The compile runs the real interpreter (here unsandboxed: the sandboxed run is what tests/builder/test_venv.py's
builds exercise); what a build could have planted in the venv is tried as an attacker would."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from builder.bytecode import Compiled, compile_venv, probe
from builder.proc import Result, run_streaming

PYTHON = Path(sys.executable).resolve()
SOURCES = {"pkg/__init__.py": "VALUE = 1\n", "pkg/mod.py": "def answer():\n    return 42\n"}


def venv(root: Path, files: dict[str, str] = SOURCES) -> Path:
    site = root / "lib" / "python3.11" / "site-packages"
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    return root


def run(argv: list[str]) -> Result:
    return run_streaming(argv, log=lambda _line: None, env={"PATH": "/usr/bin:/bin"}, deadline=time.monotonic() + 120)


def compile_into(env: Path, store: Path, tmp: Path, runner=run) -> Compiled:  # type: ignore[no-untyped-def]
    work = tmp / f"work-{env.name}"
    work.mkdir()
    return compile_venv(env, store, work, PYTHON, runner, 2)


def pyc(env: Path, name: str) -> Path:
    source = env / "lib" / "python3.11" / "site-packages" / name
    return source.parent / "__pycache__" / f"{source.stem}.{probe(PYTHON).tag}.pyc"


def loaded_from(env: Path, module: str) -> str:
    """What `python -v` says it loaded `module`'s code from."""
    site = env / "lib" / "python3.11" / "site-packages"
    done = subprocess.run([str(PYTHON), "-I", "-S", "-B", "-v", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); import {module}"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return "\n".join(line for line in done.stderr.splitlines() if "code object from" in line and "site-packages" in line)


def test_the_second_venv_links_the_first_ones_bytecode(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first, second = venv(tmp_path / "a"), venv(tmp_path / "b")
    assert compile_into(first, store, tmp_path) == Compiled(shared=0, compiled=2)
    assert compile_into(second, store, tmp_path) == Compiled(shared=2, compiled=0)
    assert pyc(first, "pkg/mod.py").stat().st_ino == pyc(second, "pkg/mod.py").stat().st_ino
    (second / "lib/python3.11/site-packages/pkg/mod.py").touch()  # another mtime: an unchecked-hash pyc still holds
    assert str(pyc(second, "pkg/mod.py")) in loaded_from(second, "pkg.mod")


def test_an_unsealed_venv_copies_from_the_store_and_adds_nothing_to_it(tmp_path: Path) -> None:
    """An unsandboxed build's venv stays writable by its app: were its pyc a link to the store's, the app
    could rewrite the bytecode of every sealed venv; were its own compile stored, the same."""
    store = tmp_path / "store"
    sealed = venv(tmp_path / "a")
    assert compile_into(sealed, store, tmp_path) == Compiled(shared=0, compiled=2)
    entries = sorted(p for p in store.rglob("*") if p.is_file())
    unsealed = venv(tmp_path / "b", {**SOURCES, "pkg/extra.py": "EXTRA = 3\n"})
    work = tmp_path / "work-b"
    work.mkdir()
    assert compile_venv(unsealed, store, work, PYTHON, run, 2, sealed=False) == Compiled(shared=2, compiled=1)
    assert pyc(unsealed, "pkg/mod.py").read_bytes() == pyc(sealed, "pkg/mod.py").read_bytes()
    assert pyc(unsealed, "pkg/mod.py").stat().st_ino != pyc(sealed, "pkg/mod.py").stat().st_ino
    assert sorted(p for p in store.rglob("*") if p.is_file()) == entries  # extra.py's bytecode is not stored
    assert str(pyc(unsealed, "pkg/extra.py")) in loaded_from(unsealed, "pkg.extra")


def test_a_different_source_never_gets_anothers_bytecode(tmp_path: Path) -> None:
    store = tmp_path / "store"
    compile_into(venv(tmp_path / "a"), store, tmp_path)
    changed = venv(tmp_path / "b", {**SOURCES, "pkg/mod.py": "def answer():\n    return 7\n"})
    assert compile_into(changed, store, tmp_path) == Compiled(shared=1, compiled=1)
    site = changed / "lib/python3.11/site-packages"
    out = subprocess.run([str(PYTHON), "-I", "-S", "-B", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); import pkg.mod; print(pkg.mod.answer())"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "7"


def test_a_planted_pycache_link_is_never_followed(tmp_path: Path) -> None:
    """The build (owner code) made pkg/__pycache__ a link to a directory outside the venv: root, placing
    bytecode after seal, must not write there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    env = venv(tmp_path / "a")
    (env / "lib/python3.11/site-packages/pkg/__pycache__").symlink_to(outside)
    compile_into(env, tmp_path / "store", tmp_path)
    assert list(outside.iterdir()) == []
    cache = env / "lib/python3.11/site-packages/pkg/__pycache__"
    assert cache.is_dir() and not cache.is_symlink() and pyc(env, "pkg/mod.py").is_file()


def test_a_shipped_pyc_is_replaced_and_never_shared(tmp_path: Path) -> None:
    """A wheel may ship any .pyc (say, for a popular module, with other code): it is replaced by the
    compile of the source next to it, and the store never names it for another venv."""
    store = tmp_path / "store"
    evil = venv(tmp_path / "a")
    planted = pyc(evil, "pkg/mod.py")
    planted.parent.mkdir()
    (tmp_path / "payload.py").write_text("def answer():\n    return 666\n")
    subprocess.run([str(PYTHON), "-I", "-S", "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], "
                    "invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)", str(tmp_path / "payload.py"), str(planted)],
                   check=True)  # fmt: skip
    payload = planted.read_bytes()
    compile_into(evil, store, tmp_path)
    assert planted.read_bytes() != payload
    assert all(entry.read_bytes() != payload for entry in store.rglob("*") if entry.is_file())
    victim = venv(tmp_path / "b")
    compile_into(victim, store, tmp_path)
    assert pyc(victim, "pkg/mod.py").read_bytes() != payload


def test_a_source_that_is_a_link_is_neither_read_nor_compiled(tmp_path: Path) -> None:
    secret = tmp_path / "secret.py"
    secret.write_text("TOKEN = 'hunter2'\n")
    env = venv(tmp_path / "a")
    (env / "lib/python3.11/site-packages/pkg/leak.py").symlink_to(secret)
    assert compile_into(env, tmp_path / "store", tmp_path) == Compiled(shared=0, compiled=2)
    assert not pyc(env, "pkg/leak.py").exists()


def test_output_that_is_not_a_pyc_of_this_interpreter_is_not_adopted(tmp_path: Path) -> None:
    """The compile runs as the build identity: whatever it leaves that is not an unchecked-hash pyc of the
    env's interpreter (a link, junk, another magic) is refused, and the sources stay without bytecode."""
    def forged(argv: list[str]) -> Result:
        out = Path(argv[-2])
        out.mkdir(parents=True, exist_ok=True)
        (out / "0.pyc").write_bytes(b"\x00\x00\x00\x00" + b"\x01\x00\x00\x00" + b"x" * 64)  # another magic
        (out / "1.pyc").symlink_to("/etc/hostname")
        return Result(0, [])

    store = tmp_path / "store"
    assert compile_into(venv(tmp_path / "a"), store, tmp_path, forged) == Compiled(shared=0, compiled=0, failed=2)
    assert not [entry for entry in store.rglob("*") if entry.is_file()]


def test_concurrent_builds_in_one_process_share_the_store_safely(tmp_path: Path) -> None:
    """Two owners' builds run as threads of one worker process (stop 29's CI: a temp name made of the pid
    alone collided, and one build failed with "No such file or directory")."""
    from concurrent.futures import ThreadPoolExecutor

    many = {f"pkg/m{index}.py": f"X = {index % 7}\n" for index in range(150)} | {"pkg/__init__.py": ""}
    envs = [venv(tmp_path / f"e{index}", many) for index in range(4)]
    store = tmp_path / "store"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda env: compile_into(env, store, tmp_path), envs))
    assert all(done.shared + done.compiled == 151 and done.failed == 0 for done in results), results
    assert all(pyc(env, "pkg/m3.py").is_file() for env in envs)
