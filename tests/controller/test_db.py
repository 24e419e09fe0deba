"""Migrations and models on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from controller.db.models import Build, Space
from controller.domain.errors import Conflict, Forbidden
from controller.services import accounts, spaces
from controller.services.platform import Platform


@pytest.fixture
def platform(db_platform: Platform) -> Platform:
    return db_platform


def test_migrations_create_every_table_and_are_idempotent(platform: Platform) -> None:
    platform.migrate()
    tables = set(inspect(platform.engine).get_table_names())
    expected = {"accounts", "memberships", "tokens", "spaces", "builds", "build_log_lines", "instances",
                "variables", "secrets", "quotas", "accelerator_devices", "platform_settings", "alembic_version"}
    assert expected <= tables


def test_tokens_are_stored_hashed_and_revocable(platform: Platform) -> None:
    with platform.tx() as session:
        user = accounts.create_user(session, "alice", password="long-enough")
        token = accounts.create_token(session, user, "laptop", "read")
    with platform.tx() as session:
        stored = [row[0] for row in session.execute(text("SELECT token_hash FROM tokens"))]
        assert token not in stored and accounts.hash_token(token) in stored
        principal = accounts.authenticate_token(session, token)
        assert principal.user.name == "alice" and principal.scope == "read" and not principal.can_write
        accounts.revoke_token(session, principal.user, accounts.list_tokens(session, principal.user)[0].id)
    with platform.tx() as session, pytest.raises(accounts.Unauthorized):
        accounts.authenticate_token(session, token)


def test_spaces_builds_and_namespaces(platform: Platform, tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    with platform.tx() as session:
        alice = accounts.create_user(session, "alice")
        bob = accounts.create_user(session, "bob")
        accounts.create_org(session, "lab", ["bob"])
        alice_p = accounts.Principal(alice, "write")
        bob_p = accounts.Principal(bob, "write")
        space = spaces.create_space(session, repos, alice_p, "alice", "demo", sdk="gradio", private=True)
        spaces.create_space(session, repos, bob_p, "lab", "shared", sdk="static")
        session.add(Build(space_id=space.id, commit_sha="a" * 40))
        with pytest.raises(Forbidden):
            spaces.create_space(session, repos, bob_p, "alice", "nope")
    with platform.tx() as session, pytest.raises(Conflict):
        spaces.create_space(session, repos, accounts.Principal(session.get(type(alice), alice.id), "write"), "alice", "demo")
    with platform.tx() as session:
        found = session.scalars(select(Space).order_by(Space.id)).all()
        assert [(s.owner.name, s.name, s.slug) for s in found] == [("alice", "demo", "alice-demo"), ("lab", "shared", "lab-shared")]
        assert found[0].created_at.tzinfo is not None
        anon = spaces.list_spaces(session, None, spaces.SpaceQuery())
        assert [s.name for s in anon] == ["shared"]
        assert (repos / "alice" / "demo.git" / "HEAD").exists()


def test_slugs_stay_unique_when_names_collide(platform: Platform, tmp_path: Path) -> None:
    with platform.tx() as session:
        a = accounts.create_user(session, "a-b")
        ab = accounts.create_user(session, "a")
        s1 = spaces.create_space(session, tmp_path, accounts.Principal(a, "write"), "a-b", "c")
        s2 = spaces.create_space(session, tmp_path, accounts.Principal(ab, "write"), "a", "b-c")
        assert s1.slug == "a-b-c" and s2.slug != s1.slug and s2.slug.startswith("a-b-c-")
