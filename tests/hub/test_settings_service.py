"""Variables and secrets services on a real SQLite platform: restart rule, encryption, space_env."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.config import Settings
from controller.db.models import Secret, Space
from controller.domain.errors import BadRequest
from controller.services import accounts, duplicate, quotas, settings_vars, spaces
from controller.services.platform import Platform
from controller.services.settings_vars import KeyValue


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    plat = Platform(Settings(data_dir=tmp_path / "data", secret_key="test-key"))
    plat.migrate()
    yield plat
    plat.dispose()


def make_space(session: Session, platform: Platform, owner: str = "ada", name: str = "demo") -> Space:
    user = accounts.get_account(session, owner) or accounts.create_user(session, owner)
    principal = accounts.Principal(user, "write")
    return spaces.create_space(session, platform.settings.repos_dir, principal, owner, name)


def test_change_restarts_only_a_built_space(platform: Platform) -> None:
    kicks: list[int] = []
    platform.kick = lambda: kicks.append(1)
    with platform.tx() as session:
        space = make_space(session, platform)
        settings_vars.set_variable(session, platform, space, KeyValue("MODEL_ID", "gpt2"))
        assert space.generation == 1
        space.target_build_id = 7
        settings_vars.set_secret(session, platform, space, KeyValue("API_KEY", "s3cret"))
        assert space.generation == 2 and space.stage == "APP_STARTING"
        space.desired = "paused"
        space.stage = "PAUSED"
        settings_vars.delete_variable(session, platform, space, "MODEL_ID")
        assert space.generation == 3 and space.stage == "PAUSED"
        assert kicks == []  # the reconciler is kicked only once the change is committed
    assert kicks


def test_secrets_are_encrypted_and_space_env_decrypts(platform: Platform) -> None:
    with platform.tx() as session:
        space = make_space(session, platform)
        settings_vars.set_variable(session, platform, space, KeyValue("MODE", "fast"))
        settings_vars.set_secret(session, platform, space, KeyValue("API_KEY", "s3cret-value"))
        stored = session.scalar(select(Secret.ciphertext).where(Secret.space_id == space.id))
        assert stored is not None and "s3cret-value" not in stored
        assert settings_vars.space_env(session, platform, space) == ({"MODE": "fast"}, {"API_KEY": "s3cret-value"})
        assert "s3cret" not in repr(settings_vars.secrets_json(session, space))


@pytest.mark.parametrize("key", ["lower", "1ST", "WITH-DASH", "", "A" * 201, "SPACE KEY"])
def test_keys_must_be_env_names(platform: Platform, key: str) -> None:
    with platform.tx() as session, pytest.raises(BadRequest, match=r"Invalid|missing"):
        settings_vars.set_variable(session, platform, make_space(session, platform), KeyValue(key, "v"))


def test_missing_secrets_follow_the_source(platform: Platform) -> None:
    with platform.tx() as session:
        source = make_space(session, platform, "ada", "src")
        copy = make_space(session, platform, "bob", "copy")
        copy.duplicated_from = "ada/src"
        for key in ("A_KEY", "B_KEY"):
            settings_vars.put_secret(session, platform, source, KeyValue(key, "x"))
        settings_vars.put_secret(session, platform, copy, KeyValue("B_KEY", "y"))
        bob = accounts.Principal(copy.owner, "write")
        assert duplicate.missing_secrets(session, bob, copy) == ["A_KEY"]


def test_missing_secrets_of_a_source_turned_private_are_not_told(platform: Platform) -> None:
    """Attack: bob duplicated ada's public space; ada made it private. Its secret names stay hers."""
    with platform.tx() as session:
        source = make_space(session, platform, "ada", "src")
        copy = make_space(session, platform, "bob", "copy")
        copy.duplicated_from = "ada/src"
        settings_vars.put_secret(session, platform, source, KeyValue("OPENAI_KEY", "x"))
        spaces.set_private(source, True)
        assert duplicate.missing_secrets(session, accounts.Principal(copy.owner, "write"), copy) == []
        assert duplicate.missing_secrets(session, accounts.Principal(source.owner, "write"), copy) == ["OPENAI_KEY"]


def test_unknown_flavor_names_the_valid_ones(platform: Platform) -> None:
    with pytest.raises(BadRequest, match="cpu-basic"):
        quotas.flavor(platform, "warp-drive")
