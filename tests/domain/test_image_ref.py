"""naming.image_ref: the one image reference a build is tagged, pushed, stored and run as (issue 14)."""

from __future__ import annotations

import re

import pytest

from controller.domain.errors import InvalidName
from controller.domain.naming import image_ref, image_tag, in_registry, registry_prefix, split_repo_id

SHA = "abc123def4567890abc123def4567890abc123de"
# what Docker accepts as a repository path component: lowercase alphanumerics joined by . _ __ -
COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def test_without_a_registry_the_local_tag_is_unchanged() -> None:
    assert image_ref("alice", "demo", SHA) == image_tag("alice", "demo", SHA) == "spaceport/alice-demo:abc123def456"


@pytest.mark.parametrize(("registry", "expected"), [
    ("127.0.0.1:5000/spaces", "127.0.0.1:5000/spaces/alice-demo:abc123def456"),
    ("registry.local:5000/spaces/", "registry.local:5000/spaces/alice-demo:abc123def456"),
    ("registry.spaceport.svc.cluster.local:5000", "registry.spaceport.svc.cluster.local:5000/alice-demo:abc123def456"),
    ("localhost:5000", "localhost:5000/alice-demo:abc123def456"),
    ("ghcr.io/acme/spaces", "ghcr.io/acme/spaces/alice-demo:abc123def456"),
])
def test_with_a_registry_the_ref_is_the_registry_then_the_slug_and_commit(registry: str, expected: str) -> None:
    assert image_ref("alice", "demo", SHA, registry) == expected
    assert in_registry(expected, registry)


@pytest.mark.parametrize("registry", [
    "http://registry.local:5000", "registry.local:5000/Spaces", "spaces", "registry.local:5000/a b",
    "registry.local:5000/../x", "registry.local:5000//x", "", "registry.local:5000/x:tag", "-bad.host/x",
])
def test_a_malformed_registry_setting_is_refused_naming_it(registry: str) -> None:
    with pytest.raises(ValueError, match="SPACEPORT_REGISTRY"):
        registry_prefix(registry)


@pytest.mark.parametrize(("owner", "name"), [
    ("Alice", "Demo.App"), ("a", "b--c"), ("a_b", "c.d-e"), ("x" * 96, "y" * 96), ("a", "..x"), ("a", "x/../../y"),
    ("a", "x:latest"), ("a", "x@sha256"), ("A", "b/c"), ("a", "b%2f.."), ("evil", "x\n"), ("a", "ü"),
])
def test_an_owner_cannot_choose_the_pushed_ref(owner: str, name: str) -> None:
    """Whatever an owner or space is called (validated or not), the ref stays one slug under the prefix."""
    registry = "registry.local:5000/spaces"
    ref = image_ref(owner, name, SHA, registry)
    assert ref.startswith(registry + "/")
    rest = ref.removeprefix(registry + "/")
    repository, tag = rest.split(":")
    assert "/" not in repository and COMPONENT.match(repository), ref
    assert len(repository) <= 63 and tag == SHA[:12]
    assert not in_registry(ref, "registry.local:5000/spaces-other") and in_registry(ref, registry)


def test_odd_names_are_refused_before_they_reach_a_build() -> None:
    for repo_id in ("alice/x:latest", "alice/../x", "alice/a/b", "alice/x@y"):
        with pytest.raises(InvalidName):
            split_repo_id(repo_id)


@pytest.mark.parametrize("commit", ["HEAD", "abc", "../../x", "ABC123DEF4567", "abc123def456:evil", ""])
def test_only_a_commit_id_becomes_the_tag(commit: str) -> None:
    with pytest.raises(ValueError, match="commit"):
        image_ref("alice", "demo", commit, "registry.local:5000/spaces")


def test_a_ref_outside_the_registry_is_not_in_it() -> None:
    assert not in_registry("spaceport/alice-demo:abc123def456", "registry.local:5000/spaces")
    assert not in_registry("registry.local:5000/spacesx/alice-demo:abc123def456", "registry.local:5000/spaces")
    assert not in_registry("registry.local:5000/spaces/alice-demo:abc123def456", "")
