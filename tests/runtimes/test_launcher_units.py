"""Pieces of the hardened launcher, each on its own: the reserved-name rule, the env memfd shim, the masking
relay (in-process and as the real `python -m controller.runtimes.logrelay` process), egress settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from builder.envnames import reserved_reason, runtime_reason, without_runtime_names
from builder.errors import CONFIG_ERROR, SpaceConfigError
from builder.spaceconfig import load_space_config
from controller.domain.masking import Masker
from controller.runtimes import hosttools, local, logrelay, netns, sandbox

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7Vb3xQk1pZ2Vx\n-----END PRIVATE KEY-----"


@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD", "ld_audit", "LD_LIBRARY_PATH", "PYTHONHOME", "PYTHONPATH",
                                  "HOME", "PORT", "GRADIO_SERVER_PORT", "SPACE_ID", "SPACE_HOST", "SPACES_ZERO_GPU",
                                  "SPACEPORT_DATA_DIR", "OAUTH_CLIENT_SECRET", "BASH_ENV", "GCONV_PATH",
                                  "BASH_FUNC_x%%"])  # fmt: skip
def test_platform_names_are_reserved_with_a_reason(name: str) -> None:
    why = reserved_reason(name)
    assert why is not None and why.startswith(f"{name} is reserved: ") and "Use another name" in why


@pytest.mark.parametrize("name", ["MODEL_ID", "HF_TOKEN", "OPENAI_API_KEY", "MY_PATH", "SPACE", "MALLOC_ARENA_MAX"])
def test_ordinary_names_are_allowed(name: str) -> None:
    assert reserved_reason(name) is None


def test_runtime_keeps_the_platform_set_names_the_controller_passes() -> None:
    kept, dropped = without_runtime_names({"SPACE_ID": "a/b", "PATH": "/x", "LD_PRELOAD": "/y.so", "A": "1"})
    assert kept == {"SPACE_ID": "a/b", "A": "1"} and dropped == ["LD_PRELOAD", "PATH"]
    assert runtime_reason("SPACE_ID") is None and reserved_reason("SPACE_ID") is not None


@pytest.mark.parametrize(("env", "needle"), [("PATH: bin:/usr/bin", "PATH is reserved"),
                                             ("LD_PRELOAD: /tmp/x.so", "LD_PRELOAD is reserved"),
                                             ("'MY-VAR': x", "'MY-VAR' is not an environment variable name")])  # fmt: skip
def test_front_matter_env_with_a_reserved_or_bad_name_is_a_config_error(tmp_path: Path, env: str, needle: str) -> None:
    (tmp_path / "README.md").write_text(f"---\nsdk: static\nenv:\n  {env}\n---\n")
    (tmp_path / "index.html").write_text("x")
    with pytest.raises(SpaceConfigError) as caught:
        load_space_config(tmp_path)
    assert caught.value.stage == CONFIG_ERROR and needle in str(caught.value)


def test_front_matter_env_with_ordinary_names_is_kept(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nsdk: static\nenv:\n  MODEL_ID: gpt2\n---\n")
    (tmp_path / "index.html").write_text("x")
    assert load_space_config(tmp_path).env == {"MODEL_ID": "gpt2"}


def test_env_memfd_shim_sets_exact_values_and_runs_nothing(tmp_path: Path) -> None:
    canary = tmp_path / "ran"
    values = {"QUOTES": "it's \"quoted\"", "MULTI": PEM, "SUBST": f"$(touch {canary})`touch {canary}`",
              "SPACES": "  a  b  ", "EMPTY": "", "UNICODE": "h\u00e9llo \u4e16\u754c"}  # fmt: skip
    fd = local._memfd("test-env", local._env_script(values))
    try:
        script = local.ENV_SHIM
        dump = f"{sys.executable} -c 'import json,os; print(json.dumps(dict(os.environ)))'"
        done = subprocess.run([hosttools.path("sh"), "-c", script, "spaceport-env", "/bin/sh", "-c", dump], stdin=fd,
                              env=hosttools.HOST_ENV, capture_output=True, text=True, check=True)  # fmt: skip
        assert os.fstat(fd).st_size == 0  # emptied once read
    finally:
        os.close(fd)
    seen = json.loads(done.stdout)
    assert {k: seen.get(k) for k in values} == values
    assert not canary.exists()


def test_relay_masks_secrets_split_across_writes_and_lines(tmp_path: Path) -> None:
    out_path = tmp_path / "app.log"
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    relay = logrelay.Relay(Masker(["tok-1234567890", PEM]), out)
    text = f"a tok-1234567890 b\n{PEM}\nrepr {PEM!r}\npartial tok-12345"
    for i in range(0, len(text), 7):  # the app writes in small pieces
        relay.feed(text[i : i + 7].encode())
    relay.feed(b"67890 end")
    relay.flush()
    os.close(out)
    disk = out_path.read_text()
    assert "tok-1234567890" not in disk and "BEGIN PRIVATE KEY" not in disk and "MIIEvQIBADAN" not in disk
    assert disk.startswith("a *** b\n") and disk.endswith("partial *** end")


def test_relay_caps_the_log_as_it_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flood (over 100 MB/s in the live test) is capped by its writer: app.log never holds more than one
    chunk past LOG_ROTATE_BYTES, app.log.1 the last MiB after the marker, and the newest line survives."""
    monkeypatch.setattr(logrelay, "LOG_ROTATE_BYTES", 3 * logrelay.LOG_KEEP_BYTES)  # 20 MB: the same, slower
    log = tmp_path / "app.log"
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    relay = logrelay.Relay(Masker(["s3cr3t-value"]), out, log)
    line = b"flood s3cr3t-value " + b"x" * 32_000 + b"\n"
    biggest = 0
    for n in range(3 * logrelay.LOG_ROTATE_BYTES // len(line)):
        relay.feed(line if n % 10 else line.replace(b"flood", f"line {n}".encode()))
        biggest = max(biggest, log.stat().st_size)
    relay.feed(b"the last line\n")
    os.close(out)
    assert biggest <= logrelay.LOG_ROTATE_BYTES + len(line) + 100
    kept = (tmp_path / "app.log.1").read_bytes()
    assert kept.startswith(logrelay.DROPPED) and len(kept) == len(logrelay.DROPPED) + logrelay.LOG_KEEP_BYTES
    assert b"s3cr3t-value" not in kept and b"s3cr3t-value" not in log.read_bytes()
    assert log.read_bytes().endswith(b"the last line\n")


def test_relay_process_gets_secrets_from_an_fd_and_appends_masked(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("===== banner =====\n")
    secrets_fd = local._memfd("secrets", logrelay.encode_secrets(["s3cr3t-value", "other-secret"]))
    try:
        relay = subprocess.Popen([sys.executable, "-E", "-s", "-m", "controller.runtimes.logrelay", str(log), str(secrets_fd)],
                                 stdin=subprocess.PIPE, env=hosttools.HOST_ENV, cwd=str(local.PACKAGE_ROOT),
                                 pass_fds=(secrets_fd,))  # fmt: skip
    finally:
        os.close(secrets_fd)
    assert relay.stdin is not None
    relay.stdin.write(b"key=s3cr3t-value\nurl=https://x/?t=other-secret\nlast line without newline s3cr3t-value")
    relay.stdin.close()
    assert relay.wait(timeout=30) == 0
    assert log.read_text() == "===== banner =====\nkey=***\nurl=https://x/?t=***\nlast line without newline ***"
    cmdline = " ".join(relay.args)  # type: ignore[arg-type]
    assert "s3cr3t" not in cmdline


def test_resolvers_and_allow_list_parsing(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# x\nnameserver 10.255.255.53\nnameserver fd00::53\nnameserver bogus\nsearch example\n")
    assert netns.resolvers(conf) == (["10.255.255.53"], ["fd00::53"])
    assert netns.parse_allow("10.1.2.3/16, fd12::/64 10.1.0.0/16") == ("10.1.0.0/16", "fd12::/64")
    with pytest.raises(ValueError, match=re.escape("'10.0.0.300/8' is not a CIDR")):
        netns.parse_allow("10.0.0.300/8")


def test_bwrap_is_launched_by_absolute_path(tmp_path: Path) -> None:
    plan = sandbox.SandboxPlan(uid=100_007, home=tmp_path / "home", etc_dir=tmp_path / "etc", ro_paths=(tmp_path / "src",),
                               protected=(), tmp_size_bytes=1 << 20)  # fmt: skip
    argv = sandbox.bwrap_argv(plan, ["true"])
    assert os.path.isabs(argv[0]) and argv[0].endswith("/bwrap")
    assert netns.enter_argv(netns.Slot(3))[0].endswith("/nsenter") and os.path.isabs(netns.enter_argv(netns.Slot(3))[0])


def test_command_paths_of_the_source_point_at_the_app_dir(tmp_path: Path) -> None:
    real = tmp_path / "snapshots" / "abc"
    real.mkdir(parents=True)
    link = tmp_path / "src"
    link.symlink_to(real)
    command = ["/venv/bin/python", "-m", "streamlit", "run", f"{link}/sub/app.py", "--directory", str(real),
               f"{real}x/other", "--server.port", "{port}"]  # fmt: skip
    assert local.in_app_dir(command, link) == ["/venv/bin/python", "-m", "streamlit", "run", "/home/user/app/sub/app.py",
                                               "--directory", "/home/user/app", f"{real}x/other", "--server.port",
                                               "{port}"]  # fmt: skip
