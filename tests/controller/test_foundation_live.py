"""Foundation, end to end against a live `spaceport serve`: CLI, git over smart HTTP, HF API client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from tests.support.gitrepo import git, make_repo, push, remote
from tests.support.server import LiveServer, make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = make_server(tmp_path_factory.mktemp("foundation")).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def tokens(server: LiveServer) -> dict[str, str]:
    return {name: server.create_user(name) for name in ("alice", "bob")}


STATIC = {"README.md": "---\ntitle: Hello\nsdk: static\n---\n", "index.html": "<h1>hi</h1>"}


def test_users_create_prints_token_last(server: LiveServer) -> None:
    result = server.cli("users", "create", "carol", "--password", "s3cret-pass")
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("sp_") and len(token) > 30
    assert HfApi(endpoint=server.url, token=token).whoami()["name"] == "carol"


def test_users_create_twice_fails_clearly(server: LiveServer) -> None:
    server.cli("users", "create", "dave")
    again = server.cli("users", "create", "dave", check=False)
    assert again.returncode == 1 and "already taken" in again.stderr


def test_push_creates_space_and_ls_remote_shows_commit(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "app", STATIC)
    sha = git(repo, "rev-parse", "HEAD").stdout.strip()
    push(repo, remote(server.url, "alice", "hello", "alice", tokens["alice"]))
    refs = git(tmp_path, "ls-remote", remote(server.url, "alice", "hello")).stdout
    assert f"{sha}\trefs/heads/main" in refs
    info = HfApi(endpoint=server.url).space_info("alice/hello")
    assert info.sha == sha and info.sdk == "static" and info.card_data.title == "Hello"
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", remote(server.url, "alice", "hello") + ".git", str(clone))
    assert (clone / "index.html").read_text() == "<h1>hi</h1>"


@pytest.mark.parametrize(
    ("who", "token_of", "expected"),
    [(None, None, "401"), ("alice", "wrong", "401"), ("bob", "bob", "403")],
)
def test_refused_pushes_change_nothing(server: LiveServer, tokens: dict[str, str], tmp_path: Path,
                                       who: str | None, token_of: str | None, expected: str) -> None:
    token = tokens.get(token_of or "", "sp_wrongtoken") if token_of else None
    repo = make_repo(tmp_path / "app", STATIC)
    result = push(repo, remote(server.url, "alice", f"refused-{expected}", who, token), check=False)
    assert result.returncode != 0
    if who is None:  # git asks for credentials after the 401 challenge; prompts are off in tests
        assert "could not read Username" in result.stderr
        probe = httpx.get(f"{server.url}/spaces/alice/refused-401/info/refs?service=git-receive-pack")
        assert probe.status_code == 401 and "Basic" in probe.headers["www-authenticate"]
    else:
        assert expected in result.stderr
    response = httpx.get(f"{server.url}/api/spaces/alice/refused-{expected}")
    assert response.status_code == 404


def test_push_into_other_namespace_is_403(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "first", STATIC)
    push(repo, remote(server.url, "alice", "guarded", "alice", tokens["alice"]))
    before = git(tmp_path, "ls-remote", remote(server.url, "alice", "guarded")).stdout
    repo2 = make_repo(tmp_path / "second", {**STATIC, "index.html": "<h1>bob was here</h1>"})
    result = push(repo2, remote(server.url, "alice", "guarded", "bob", tokens["bob"]), check=False)
    assert result.returncode != 0 and "403" in result.stderr
    assert git(tmp_path, "ls-remote", remote(server.url, "alice", "guarded")).stdout == before


def test_hf_api_lifecycle(server: LiveServer, tokens: dict[str, str]) -> None:
    api = HfApi(endpoint=server.url, token=tokens["alice"])
    assert api.whoami()["name"] == "alice"
    url = api.create_repo("alice/demo", repo_type="space", space_sdk="gradio")
    assert url.repo_id == "alice/demo"
    info = api.space_info("alice/demo")
    assert info.id == "alice/demo" and info.author == "alice" and info.sdk == "gradio" and info.private is False
    assert "alice/demo" in [s.id for s in api.list_spaces(author="alice")]
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("alice/demo", repo_type="space", space_sdk="gradio")
    assert conflict.value.response.status_code == 409
    api.create_repo("alice/demo", repo_type="space", space_sdk="gradio", exist_ok=True)
    api.delete_repo("alice/demo", repo_type="space")
    with pytest.raises(RepositoryNotFoundError):
        api.space_info("alice/demo")


def test_hf_api_refuses_other_namespace_and_bad_names(server: LiveServer, tokens: dict[str, str]) -> None:
    api = HfApi(endpoint=server.url, token=tokens["bob"])
    with pytest.raises(HfHubHTTPError) as forbidden:
        api.create_repo("alice/by-bob", repo_type="space", space_sdk="gradio")
    assert forbidden.value.response.status_code == 403
    for bad in ("a..b", "-lead", "x" * 97, "api"):
        response = httpx.post(f"{server.url}/api/repos/create", json={"name": bad, "type": "space", "sdk": "gradio"},
                              headers={"authorization": f"Bearer {tokens['bob']}"})
        assert response.status_code == 400, bad
        message = response.json()["error"]
        assert any(hint in message for hint in ("Allowed:", "reserved", "longer than 96")), message


def test_private_space_is_invisible_to_others(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    alice = HfApi(endpoint=server.url, token=tokens["alice"])
    alice.create_repo("alice/secret-app", repo_type="space", space_sdk="static", private=True)
    repo = make_repo(tmp_path / "app", STATIC)
    push(repo, remote(server.url, "alice", "secret-app", "alice", tokens["alice"]))
    assert alice.space_info("alice/secret-app").private is True
    for api in (HfApi(endpoint=server.url, token=tokens["bob"]), HfApi(endpoint=server.url, token=False)):
        with pytest.raises(RepositoryNotFoundError):
            api.space_info("alice/secret-app")
        assert "alice/secret-app" not in [s.id for s in api.list_spaces(author="alice")]
    bob_clone = git(tmp_path, "clone", "-q", remote(server.url, "alice", "secret-app", "bob", tokens["bob"]), str(tmp_path / "b"), check=False)
    assert bob_clone.returncode != 0 and "not found" in bob_clone.stderr
    anon_clone = git(tmp_path, "clone", "-q", remote(server.url, "alice", "secret-app"), str(tmp_path / "c"), check=False)
    assert anon_clone.returncode != 0
    own_clone = git(tmp_path, "clone", "-q", remote(server.url, "alice", "secret-app", "alice", tokens["alice"]), str(tmp_path / "d"))
    assert own_clone.returncode == 0


def test_org_members_may_push(server: LiveServer, tokens: dict[str, str], tmp_path: Path) -> None:
    server.cli("orgs", "create", "lab", "--member", "bob")
    repo = make_repo(tmp_path / "app", STATIC)
    push(repo, remote(server.url, "lab", "shared", "bob", tokens["bob"]))
    refused = push(repo, remote(server.url, "lab", "shared", "alice", tokens["alice"]), check=False)
    assert refused.returncode != 0 and "403" in refused.stderr


def test_read_token_cannot_push(server: LiveServer, tmp_path: Path) -> None:
    read_token = server.cli("tokens", "create", "alice", "--scope", "read").stdout.strip()
    repo = make_repo(tmp_path / "app", STATIC)
    result = push(repo, remote(server.url, "alice", "readonly-push", "alice", read_token), check=False)
    assert result.returncode != 0 and "403" in result.stderr
