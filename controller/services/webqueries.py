"""Read helpers the web UI needs: platform settings and the repository at HEAD.

Everything here goes through the session and the domain; nothing talks to a runtime directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from controller.db.models import PlatformSetting, Space
from controller.git import storage
from controller.services.platform import Platform


def get_setting(session: Session, key: str) -> Any:
    row = session.get(PlatformSetting, key)
    return row.value if row is not None else None


def put_setting(session: Session, key: str, value: Any) -> None:
    session.merge(PlatformSetting(key=key, value=value))
    session.flush()



# ---- the repository at HEAD, for the file and commit pages -----------------------------------


def _repo(platform: Platform, space: Space) -> Path:
    return storage.repo_path(platform.settings.repos_dir, space.owner.name, space.name)


def head_files(platform: Platform, space: Space) -> list[str]:
    return storage.list_files(_repo(platform, space), space.head_sha) if space.head_sha else []


def head_file(platform: Platform, space: Space, path: str, limit: int) -> bytes | None:
    if not space.head_sha or not path or ".." in path.split("/"):
        return None
    return storage.read_file(_repo(platform, space), space.head_sha, path, limit)


def recent_commits(platform: Platform, space: Space, limit: int = 100) -> list[storage.Commit]:
    return storage.commits(_repo(platform, space), limit=limit)
