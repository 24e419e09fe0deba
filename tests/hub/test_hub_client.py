"""Spaces through the real huggingface_hub client against a live Spaceport: commit API, variables,
secrets, duplicate, reads. Pipeline-marked tests additionally need builds to reach RUNNING."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from tests.support.gitrepo import git
from tests.support.server import LiveServer

STATIC = {
    "README.md": "---\ntitle: Hub Static\nsdk: static\n---\n",
    "index.html": "<h1>uploaded without git</h1>",
    "assets/style.css": "h1 { color: teal; }",
}
GRADIO_APP = '''import os
import gradio as gr

def greet(name: str) -> str:
    return f"Hello {name} from {os.environ.get('GREETING_SOURCE', 'nowhere')}"

gr.Interface(fn=greet, inputs="text", outputs="text").launch()
'''
GRADIO = {"README.md": "---\ntitle: Greeter\nsdk: gradio\napp_file: app.py\n---\n",
          "app.py": GRADIO_APP, "requirements.txt": ""}


# RFC 6761: *.localhost is loopback. Browsers (and systemd's nss-myhostname) resolve it; plain glibc
# here does not, so the client subprocess gets the same resolution the host-based app URLs rely on.
LOOPBACK_SHIM = """import socket
_real = socket.getaddrinfo
def _gai(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith('.localhost'):
        host = '127.0.0.1'
    return _real(host, *args, **kwargs)
socket.getaddrinfo = _gai
"""


def api(server: LiveServer, token: str | bool) -> HfApi:
    return HfApi(endpoint=server.url, token=token)


def write_folder(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def new_space(server: LiveServer, token: str, repo_id: str, tmp_path: Path, files: dict[str, str] = STATIC) -> str:
    hf = api(server, token)
    hf.create_repo(repo_id, repo_type="space", space_sdk="static")
    info = hf.upload_folder(repo_id=repo_id, repo_type="space", folder_path=write_folder(tmp_path / "src", files))
    return str(info.oid)


def status_of(exc: pytest.ExceptionInfo[HfHubHTTPError]) -> int:
    response = exc.value.response
    assert response is not None
    return int(response.status_code)


def test_upload_folder_commits_and_space_info_matches(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    sha = new_space(server, tokens["alice"], "alice/uploaded", tmp_path)
    anon = api(server, False)
    info = anon.space_info("alice/uploaded")
    assert info.sha == sha and info.sdk == "static" and info.card_data is not None
    assert info.card_data.title == "Hub Static"
    assert sorted(anon.list_repo_files("alice/uploaded", repo_type="space")) == sorted(STATIC)
    assert "alice/uploaded" in [s.id for s in anon.list_spaces(author="alice")]
    path = anon.hf_hub_download("alice/uploaded", "assets/style.css", repo_type="space", cache_dir=tmp_path / "cache")
    assert Path(path).read_text() == STATIC["assets/style.css"]
    assert anon.file_exists("alice/uploaded", "index.html", repo_type="space")
    assert not anon.file_exists("alice/uploaded", "missing.txt", repo_type="space")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", f"{server.url}/spaces/alice/uploaded", str(clone))
    assert git(clone, "rev-parse", "HEAD").stdout.strip() == sha
    assert (clone / "index.html").read_text() == STATIC["index.html"]


def test_commits_build_history_and_deletes(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    hf = api(server, tokens["alice"])
    first = new_space(server, tokens["alice"], "alice/history", tmp_path)
    second = hf.upload_file(path_or_fileobj=b"v2", path_in_repo="notes/v.txt", repo_id="alice/history",
                            repo_type="space", commit_message="Add notes").oid
    third = hf.create_commit("alice/history", repo_type="space", commit_message="Clean up",
                             operations=[CommitOperationDelete("notes/"), CommitOperationDelete("assets/style.css")]).oid
    log = hf.list_repo_commits("alice/history", repo_type="space")
    assert [c.commit_id for c in log] == [third, second, first]
    assert [c.title for c in log][:2] == ["Clean up", "Add notes"]
    assert sorted(hf.list_repo_files("alice/history", repo_type="space")) == ["README.md", "index.html"]
    assert hf.space_info("alice/history", revision=second).sha == second
    assert hf.space_info("alice/history").sha == third


def test_unchanged_upload_makes_no_commit(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    sha = new_space(server, tokens["alice"], "alice/noop", tmp_path)
    hf = api(server, tokens["alice"])
    again = hf.upload_file(path_or_fileobj=STATIC["index.html"].encode(), path_in_repo="index.html",
                           repo_id="alice/noop", repo_type="space")
    assert again.oid == sha
    assert len(hf.list_repo_commits("alice/noop", repo_type="space")) == 1


def test_commit_refusals(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    sha = new_space(server, tokens["alice"], "alice/guarded", tmp_path)
    op = [CommitOperationAdd("x.txt", b"x")]
    with pytest.raises(HfHubHTTPError) as bob:
        api(server, tokens["bob"]).create_commit("alice/guarded", op, commit_message="m", repo_type="space")
    assert status_of(bob) == 403
    with pytest.raises(HfHubHTTPError) as anon:
        api(server, False).create_commit("alice/guarded", op, commit_message="m", repo_type="space")
    assert status_of(anon) == 401
    hf = api(server, tokens["alice"])
    hf.upload_file(path_or_fileobj=b"moved", path_in_repo="y.txt", repo_id="alice/guarded", repo_type="space")
    with pytest.raises(HfHubHTTPError) as stale:
        hf.create_commit("alice/guarded", [CommitOperationAdd("z.txt", b"z")], commit_message="m",
                         repo_type="space", parent_commit=sha)
    assert status_of(stale) == 412
    # files over 10 MB now go through Git LFS: tests/git_lfs/test_git_lfs_live.py
    assert "x.txt" not in hf.list_repo_files("alice/guarded", repo_type="space")


def test_concurrent_commits_are_all_kept(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    new_space(server, tokens["alice"], "alice/busy", tmp_path)
    hf = api(server, tokens["alice"])

    def upload(i: int) -> str:
        return str(hf.upload_file(path_or_fileobj=f"file {i}".encode(), path_in_repo=f"f{i}.txt",
                                  repo_id="alice/busy", repo_type="space").oid)

    with ThreadPoolExecutor(6) as pool:
        shas = list(pool.map(upload, range(6)))
    files = hf.list_repo_files("alice/busy", repo_type="space")
    assert {f"f{i}.txt" for i in range(6)} <= set(files)
    assert set(shas) <= {c.commit_id for c in hf.list_repo_commits("alice/busy", repo_type="space")}


def test_variables_roundtrip_and_validation(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    new_space(server, tokens["alice"], "alice/vars", tmp_path)
    hf = api(server, tokens["alice"])
    added = hf.add_space_variable("alice/vars", "MODEL_ID", "gpt2", description="which model")
    assert added["MODEL_ID"].value == "gpt2" and added["MODEL_ID"].description == "which model"
    hf.add_space_variable("alice/vars", "MODEL_ID", "gpt3")
    hf.add_space_variable("alice/vars", "TEMPERATURE", "0.7")
    public = api(server, False).get_space_variables("alice/vars")
    assert {k: v.value for k, v in public.items()} == {"MODEL_ID": "gpt3", "TEMPERATURE": "0.7"}
    assert public["MODEL_ID"].updated_at is not None and public["MODEL_ID"].description == "which model"
    assert set(hf.delete_space_variable("alice/vars", "TEMPERATURE")) == {"MODEL_ID"}
    with pytest.raises(HfHubHTTPError) as bad:
        hf.add_space_variable("alice/vars", "lower-case", "x")
    assert status_of(bad) == 400 and "uppercase" in str(bad.value)
    with pytest.raises(HfHubHTTPError) as bob:
        api(server, tokens["bob"]).add_space_variable("alice/vars", "HACK", "1")
    assert status_of(bob) == 403


def test_secrets_are_write_only(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    new_space(server, tokens["alice"], "alice/secretive", tmp_path)
    hf = api(server, tokens["alice"])
    value = "sk-live-7f3a9c1e-never-shown"
    hf.add_space_secret("alice/secretive", "API_KEY", value, description="upstream key")
    hf.add_space_secret("alice/secretive", "OTHER_KEY", "temporary")
    hf.delete_space_secret("alice/secretive", "OTHER_KEY")
    listed = hf.get_space_secrets("alice/secretive")
    assert list(listed) == ["API_KEY"] and listed["API_KEY"].description == "upstream key"
    headers = {"Authorization": f"Bearer {tokens['alice']}"}
    base = f"{server.url}/api/spaces/alice/secretive"
    for url in (base, f"{base}/runtime", f"{base}/variables", f"{base}/secrets", f"{server.url}/api/spaces?full=true",
                f"{base}/revision/main", f"{base}/tree/main"):
        body = httpx.get(url, headers=headers).text
        assert value not in body and "7f3a9c1e" not in body, url
    with pytest.raises(HfHubHTTPError) as bob:
        api(server, tokens["bob"]).get_space_secrets("alice/secretive")
    assert status_of(bob) == 403
    assert value not in server.logs()


def test_duplicate_copies_code_and_variables_not_secrets(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    alice, bob = api(server, tokens["alice"]), api(server, tokens["bob"])
    new_space(server, tokens["alice"], "alice/original", tmp_path)
    alice.upload_file(path_or_fileobj=b"more", path_in_repo="more.txt", repo_id="alice/original", repo_type="space")
    alice.add_space_variable("alice/original", "MODEL_ID", "gpt2")
    alice.add_space_variable("alice/original", "MODE", "fast")
    alice.add_space_secret("alice/original", "API_KEY", "alice-secret-value")
    alice.add_space_secret("alice/original", "DB_PASSWORD", "alice-db-password")
    url = bob.duplicate_repo("alice/original", "bob/forked", repo_type="space",
                             space_variables=[{"key": "MODE", "value": "careful"}],
                             space_secrets=[{"key": "DB_PASSWORD", "value": "bob-db-password"}])
    assert url.repo_id == "bob/forked"
    info = bob.space_info("bob/forked")
    assert getattr(info, "duplicatedFrom", None) == "alice/original"
    assert info.runtime is not None and info.runtime.requested_hardware == "cpu-basic"
    assert {k: v.value for k, v in bob.get_space_variables("bob/forked").items()} == {"MODEL_ID": "gpt2", "MODE": "careful"}
    assert list(bob.get_space_secrets("bob/forked")) == ["DB_PASSWORD"]
    missing = httpx.get(f"{server.url}/api/spaces/bob/forked/secrets/missing",
                        headers={"Authorization": f"Bearer {tokens['bob']}"}).json()
    assert missing["missingSecrets"] == ["API_KEY"]
    source_log = [c.commit_id for c in alice.list_repo_commits("alice/original", repo_type="space")]
    assert [c.commit_id for c in bob.list_repo_commits("bob/forked", repo_type="space")] == source_log
    assert info.sha == source_log[0]
    assert alice.get_space_variables("alice/original")["MODE"].value == "fast"


def test_duplicate_refusals(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    alice, bob = api(server, tokens["alice"]), api(server, tokens["bob"])
    alice.create_repo("alice/hidden", repo_type="space", space_sdk="static", private=True)
    with pytest.raises(RepositoryNotFoundError):
        bob.duplicate_repo("alice/hidden", "bob/hidden", repo_type="space")
    private_copy = alice.duplicate_repo("alice/hidden", "alice/hidden-copy", repo_type="space")
    assert alice.space_info(private_copy.repo_id).private is True
    new_space(server, tokens["alice"], "alice/forkme", tmp_path)
    with pytest.raises(HfHubHTTPError) as other_ns:
        bob.duplicate_repo("alice/forkme", "alice/forkme-2", repo_type="space")
    assert status_of(other_ns) == 403
    with pytest.raises(HfHubHTTPError) as flavor:
        bob.duplicate_repo("alice/forkme", "bob/forkme", repo_type="space", space_hardware="quantum-xl")  # type: ignore[arg-type]
    assert status_of(flavor) == 400 and "cpu-basic" in str(flavor.value)
    bob.duplicate_repo("alice/forkme", "bob/forkme", repo_type="space")
    with pytest.raises(HfHubHTTPError) as twice:
        bob.duplicate_repo("alice/forkme", "bob/forkme", repo_type="space")
    assert status_of(twice) == 409
    assert bob.duplicate_repo("alice/forkme", "bob/forkme", repo_type="space", exist_ok=True).repo_id == "bob/forkme"


def test_delete_repo(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    new_space(server, tokens["alice"], "alice/doomed", tmp_path)
    hf = api(server, tokens["alice"])
    hf.add_space_secret("alice/doomed", "API_KEY", "x")
    hf.delete_repo("alice/doomed", repo_type="space")
    with pytest.raises(RepositoryNotFoundError):
        hf.space_info("alice/doomed")


def test_readme_front_matter_is_validated(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    new_space(server, tokens["alice"], "alice/yaml", tmp_path)
    with pytest.raises(ValueError, match="malformed YAML"):
        api(server, tokens["alice"]).upload_file(path_or_fileobj=b"---\nsdk: [static\n---\n", path_in_repo="README.md",
                                                 repo_id="alice/yaml", repo_type="space")


# ----------------------------------------------------------------------------- pipeline


def wait_running(hf: HfApi, repo_id: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    stage = None
    while time.monotonic() < deadline:
        stage = hf.get_space_runtime(repo_id).stage
        if stage == "RUNNING":
            return
        assert stage not in ("BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR", "NO_APP_FILE"), stage
        time.sleep(1)
    raise AssertionError(f"{repo_id} did not reach RUNNING within {timeout}s (stage {stage})")


@pytest.mark.pipeline
def test_uploaded_and_duplicated_spaces_run(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    new_space(server, tokens["alice"], "alice/runs", tmp_path)
    alice, bob = api(server, tokens["alice"]), api(server, tokens["bob"])
    wait_running(alice, "alice/runs")
    bob.duplicate_repo("alice/runs", "bob/runs", repo_type="space")
    wait_running(bob, "bob/runs")
    host = httpx.URL(str(bob.space_info("bob/runs").host))  # http://bob-runs.localhost:PORT
    page = httpx.get(f"{server.url}/", headers={"Host": f"{host.host}:{server.port}"})
    assert "uploaded without git" in page.text


@pytest.mark.pipeline
def test_gradio_client_calls_space_by_id(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    hf = api(server, tokens["alice"])
    hf.create_repo("alice/greeter", repo_type="space", space_sdk="gradio")
    hf.upload_folder(repo_id="alice/greeter", repo_type="space", folder_path=write_folder(tmp_path / "gr", GRADIO))
    hf.add_space_variable("alice/greeter", "GREETING_SOURCE", "spaceport")
    wait_running(hf, "alice/greeter", timeout=600)
    script = LOOPBACK_SHIM + (
        "from gradio_client import Client\n"
        "print(Client('alice/greeter', verbose=False).predict('Ada', api_name='/greet'))\n"
    )
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_TOKEN": tokens["alice"], "HF_HUB_OFFLINE": "0"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Hello Ada from spaceport" in result.stdout, json.dumps(result.stdout[-500:])
