"""More of the Hugging Face Hub API for spaces: variables, secrets, duplicate, the commit API and reads.

Shapes follow what `huggingface_hub.HfApi` sends and parses (add_space_variable, get_space_variables,
add_space_secret, duplicate_repo, create_commit / upload_file / upload_folder, list_repo_tree,
list_repo_commits, hf_hub_download). Secret values are accepted and never returned.
`gradio_client.Client("OWNER/NAME")` needs only space_info's `host` and the runtime stage (spaces.py).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from builder.errors import SpaceConfigError
from builder.spaceconfig import parse_front_matter
from controller.api.deps import DB, Caller, PlatformDep, User
from controller.api.limits import too_deep
from controller.db.models import Space
from controller.domain.errors import BadRequest, NotImplementedHere
from controller.git import quota, storage
from controller.services import blobs, builds, commits, duplicate, lifecycle, settings_vars, spaces
from controller.services.accounts import Principal
from controller.services.platform import Platform
from controller.services.settings_vars import KeyValue
from controller.services.views import space_json

router = APIRouter(tags=["hub"])
SPACE = "/api/spaces/{owner}/{name}"
COMMITS_PAGE = 100


class KeyValueBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    key: str
    value: str
    description: str | None = None

    def item(self) -> KeyValue:
        return KeyValue(self.key, self.value, self.description)


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    key: str


class DuplicateBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    repository: str
    private: bool | None = None
    visibility: str | None = None
    hardware: str | None = None
    storage: str | None = None
    sleepTimeSeconds: int | None = None
    secrets: list[KeyValueBody] = Field(default_factory=list)
    variables: list[KeyValueBody] = Field(default_factory=list)

    def is_private(self) -> bool | None:
        if self.visibility is None:
            return self.private
        if self.visibility not in ("public", "private"):
            raise BadRequest("visibility must be 'public' or 'private' (Spaceport has no 'protected' spaces).")
        return self.visibility == "private"


class PreuploadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    files: list[dict[str, Any]]


class ValidateYamlBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str
    repoType: str | None = None


async def raw_body(request: Request) -> bytes:
    return await request.body()


def _base(platform: Platform) -> str:
    return platform.settings.public_url.rstrip("/")


def _repo(platform: Platform, space: Space) -> Path:
    return storage.repo_path(platform.settings.repos_dir, space.owner.name, space.name)


# ----------------------------------------------------------------------------- variables


XET_MESSAGE = ("Spaceport stores large files with Git LFS, not Xet: set HF_HUB_DISABLE_XET=1 (or uninstall "
               "hf_xet) where huggingface_hub runs, and upload again")


@router.get(SPACE + "/xet-{kind}-token/{revision:path}", include_in_schema=False)
@router.get(SPACE + "/xet-{kind}-token", include_in_schema=False)
def xet_token(kind: str) -> None:
    """huggingface_hub with hf_xet installed asks for a Xet token and never falls back to LFS: say what to do."""
    raise NotImplementedHere(XET_MESSAGE)


@router.get(SPACE + "/variables")
def get_variables(owner: str, name: str, db: DB, caller: Caller) -> dict[str, Any]:
    """Variables are public: whoever can read the space can read them (like HF)."""
    space = spaces.get_space(db, caller, owner, name)
    return settings_vars.variables_json(db, space)


@router.post(SPACE + "/variables")
def add_variable(owner: str, name: str, body: KeyValueBody, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    settings_vars.set_variable(db, platform, space, body.item())
    return settings_vars.variables_json(db, space)


@router.delete(SPACE + "/variables")
def delete_variable(owner: str, name: str, body: KeyBody, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    settings_vars.delete_variable(db, platform, space, body.key)
    return settings_vars.variables_json(db, space)


# ----------------------------------------------------------------------------- secrets


@router.get(SPACE + "/secrets")
def get_secrets(owner: str, name: str, db: DB, user: User) -> dict[str, Any]:
    """Secret keys with description and update time; values are write-only."""
    space = spaces.get_writable_space(db, user, owner, name)
    return settings_vars.secrets_json(db, space)


@router.get(SPACE + "/secrets/missing")
def get_missing_secrets(owner: str, name: str, db: DB, user: User) -> dict[str, Any]:
    """Secret keys the space this one was duplicated from has and this one still lacks."""
    space = spaces.get_writable_space(db, user, owner, name)
    return {"duplicatedFrom": space.duplicated_from, "missingSecrets": duplicate.missing_secrets(db, user, space)}


@router.post(SPACE + "/secrets")
def add_secret(owner: str, name: str, body: KeyValueBody, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    settings_vars.set_secret(db, platform, space, body.item())
    return {}


@router.delete(SPACE + "/secrets")
def delete_secret(owner: str, name: str, body: KeyBody, db: DB, user: User, platform: PlatformDep) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    settings_vars.delete_secret(db, platform, space, body.key)
    return {}


# ----------------------------------------------------------------------------- duplicate


@router.post(SPACE + "/duplicate")
def duplicate_space(owner: str, name: str, body: DuplicateBody, db: DB, user: User,
                    platform: PlatformDep) -> dict[str, Any]:
    lifecycle.check_sleep_time(body.sleepTimeSeconds)  # the same rule as the sleep-time API, before copying
    request = duplicate.DuplicateRequest(
        target=body.repository, private=body.is_private(), hardware=body.hardware, sleep_time=body.sleepTimeSeconds,
        secrets=[s.item() for s in body.secrets], variables=[v.item() for v in body.variables],
    )
    result = duplicate.duplicate(db, platform, user, owner, name, request)
    target = result.space.space_id
    return {"url": f"{_base(platform)}/spaces/{target}", "name": target, "id": f"sp{result.space.id}",
            "duplicatedFrom": f"{owner}/{name}", "missingSecrets": result.missing_secrets, "filesCopyPending": False}


# ----------------------------------------------------------------------------- commit API


@router.post(SPACE + "/preupload/{revision:path}")
def preupload(owner: str, name: str, revision: str, body: PreuploadBody, db: DB, user: User,
              platform: PlatformDep) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    limits = quota.StorageLimits.from_settings(platform.settings)
    return {"files": commits.upload_modes(_repo(platform, space), revision, body.files, limits)}


@router.post(SPACE + "/commit/{revision:path}")
def commit(owner: str, name: str, revision: str, body: Annotated[bytes, Depends(raw_body)], db: DB, user: User,
           platform: PlatformDep, create_pr: str | None = None) -> dict[str, Any]:
    space = spaces.get_writable_space(db, user, owner, name)
    spaces.check_code_push(platform, user)
    if create_pr not in (None, "", "0", "false"):
        raise BadRequest("Spaceport has no pull requests: commit to main directly (create_pr=False).")
    commits.check_branch(revision)
    request = _parse_commit(body, platform.settings.max_json_depth)
    limits = quota.StorageLimits.from_settings(platform.settings)
    sha = commits.write_commit(_repo(platform, space), request, _author(user, platform), limits=limits)
    _record(db, platform, space)
    return {"commitUrl": f"{_base(platform)}/spaces/{owner}/{name}/commit/{sha}", "commitOid": sha,
            "pullRequestUrl": None}


def _parse_commit(body: bytes, max_depth: int) -> commits.CommitRequest:
    """NDJSON lines nested too deep for the JSON parser are a client error that says so, not a 500."""
    for number, line in enumerate(body.splitlines(), 1):
        if too_deep(line, max_depth):
            raise BadRequest(f"Commit body line {number} is nested more than {max_depth} levels deep: each line is "
                             "one flat operation ({'key': ..., 'value': {...}}); the limit is SPACEPORT_MAX_JSON_DEPTH.")
    return commits.parse_ndjson(body)


def _author(user: Principal, platform: Platform) -> commits.Author:
    account = user.user
    host = platform.settings.apps_domain or "localhost"
    return commits.Author(account.fullname or account.name, account.email or f"{account.name}@users.noreply.{host}")


def _record(session: Session, platform: Platform, space: Space) -> None:
    """A new head on main builds like a push (the current head: a concurrent commit may be newer)."""
    repo = _repo(platform, space)
    head = storage.head_sha(repo)
    if head is None or head == space.head_sha:
        return
    build = builds.record_push(session, space, repo, head)
    platform.queue_build(session, build.id)


@router.post("/api/validate-yaml")
def validate_yaml(body: ValidateYamlBody) -> JSONResponse:
    """README front matter check `create_commit` runs before uploading a README.md."""
    try:
        parse_front_matter(body.content)
    except SpaceConfigError as exc:
        errors = [{"message": exc.message}]
        return JSONResponse({"error": exc.message, "errors": errors, "warnings": []}, status_code=400)
    return JSONResponse({"errors": [], "warnings": []})


# ----------------------------------------------------------------------------- reads


@router.get(SPACE + "/revision/{revision:path}")
def space_info_at(owner: str, name: str, revision: str, db: DB, caller: Caller, platform: PlatformDep) -> dict[str, Any]:
    space = spaces.get_space(db, caller, owner, name)
    repo = _repo(platform, space)
    sha = commits.resolve(repo, revision)
    info = space_json(space, platform.settings, files=storage.list_files(repo, sha),
                      default_sleep=lifecycle.default_sleep(db, space))
    info["sha"] = sha
    return info


@router.get(SPACE + "/tree/{revision}")
@router.get(SPACE + "/tree/{revision}/{path:path}")
def tree(owner: str, name: str, revision: str, db: DB, caller: Caller, platform: PlatformDep, path: str = "",
         recursive: bool = False) -> list[dict[str, object]]:
    space = spaces.get_space(db, caller, owner, name)
    repo = _repo(platform, space)
    return commits.tree(repo, commits.resolve(repo, revision), path, recursive)


@router.get(SPACE + "/commits/{revision:path}")
def list_commits(owner: str, name: str, revision: str, request: Request, response: Response, db: DB, caller: Caller,
                 platform: PlatformDep, p: int = Query(0, ge=0, le=10**6)) -> list[dict[str, object]]:
    space = spaces.get_space(db, caller, owner, name)
    repo = _repo(platform, space)
    items = commits.log(repo, commits.resolve(repo, revision), p * COMMITS_PAGE, COMMITS_PAGE + 1)
    if len(items) > COMMITS_PAGE:
        response.headers["Link"] = f'<{request.url.include_query_params(p=p + 1)}>; rel="next"'
    return items[:COMMITS_PAGE]


@router.api_route("/spaces/{owner}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
def resolve_file(owner: str, name: str, revision: str, path: str, request: Request, db: DB, caller: Caller,
                 platform: PlatformDep) -> Response:
    """A file's bytes at a revision, with the headers `hf_hub_download` / `file_exists` read.

    Streamed from git in chunks (a big file never sits in memory), with no database session held meanwhile.
    """
    space = spaces.get_space(db, caller, owner, name)
    repo = _repo(platform, space)
    sha = commits.resolve(repo, revision)
    entry = blobs.blob_entry(repo, sha, path)
    media = mimetypes.guess_type(path)[0] or "application/octet-stream"
    headers = {"X-Repo-Commit": sha, "ETag": f'"{entry.oid}"', "Cache-Control": "private, max-age=0",
               "Content-Length": str(entry.size)}
    if request.method == "HEAD":
        return Response(media_type=media, headers=headers)
    return StreamingResponse(blobs.blob_chunks(repo, entry.oid), media_type=media, headers=headers)
