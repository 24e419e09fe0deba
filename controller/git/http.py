"""Git smart HTTP through `git http-backend`: clone/fetch (read) and push (write) of space repos.

Remote: http://HOST/spaces/OWNER/NAME (the `.git` suffix also works). Push authenticates with HTTP Basic
USER:TOKEN. A push to a missing space in a namespace the pusher may write creates it once the push has
succeeded: a refused or aborted first push (say git-lfs could not upload) leaves no space and no repo. A push
that moves main records a Build and enqueues it. Git LFS (controller.api.lfs) shares the access rule
(controller.git.access); the pre-receive hook refuses LFS pointers whose objects were never uploaded. Storage limits (controller.git.quota): an owner already at its limit
is refused before anything is sent (git shows the message as `remote: ...`); a push that would pass it is
refused by the pre-receive hook, which every push runs from DATA_DIR/git-hooks (core.hooksPath), and git
drops its quarantined objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from controller.api.deps import get_platform, token_from_header
from controller.domain.errors import NotFound, SpaceportError
from controller.domain.naming import validate_name
from controller.git import access, quota, storage
from controller.services import builds, spaces
from controller.services.accounts import Principal, authenticate_token
from controller.services.platform import Platform

log = logging.getLogger(__name__)
router = APIRouter(tags=["git"])
SERVICES = ("git-upload-pack", "git-receive-pack")


@dataclass(frozen=True)
class GitRequest:
    owner: str
    name: str
    service: str  # git-upload-pack | git-receive-pack
    path_info: str  # e.g. /info/refs or /git-receive-pack


def _parse(owner: str, name: str, tail: str, query_service: str | None) -> GitRequest:
    name = name.removesuffix(".git")
    validate_name(owner, "owner")
    validate_name(name, "space name")
    if tail == "info/refs":
        service = query_service or ""
    elif tail in SERVICES:
        service = tail
    else:
        raise NotFound("Only the smart HTTP protocol is served (info/refs, git-upload-pack, git-receive-pack).")
    if service not in SERVICES:
        raise NotFound("Dumb HTTP is not supported: use a git client that speaks smart HTTP (any git >= 1.6.6).")
    return GitRequest(owner, name, service, "/" + tail)


def _authorize(platform: Platform, req: GitRequest, auth_header: str | None) -> Path:
    """Check access and storage room; return the bare repo path (or, for the first push's ref
    advertisement, a pristine empty repo: nothing is created until the push itself arrives)."""
    if req.service == "git-receive-pack":
        storage.install_hooks(hooks_dir(platform))
    with platform.tx() as session:
        token = token_from_header(auth_header)
        principal: Principal | None = authenticate_token(session, token) if token else None
        if req.service != "git-receive-pack":
            access.check_read(session, principal, req.owner, req.name)
            return storage.repo_path(platform.settings.repos_dir, req.owner, req.name)
        space = access.check_write(session, platform, principal, req.owner, req.name)
    repo = storage.repo_path(platform.settings.repos_dir, req.owner, req.name)
    quota.check_room(quota.StorageLimits.from_settings(platform.settings), repo)  # before creating or receiving
    if space is None and not (repo / "HEAD").exists():
        if req.path_info == "/info/refs":
            return empty_repo(platform)
        storage.init_bare(repo)  # the space row comes only once the push succeeds (_after_push)
    return repo


def empty_repo(platform: Platform) -> Path:
    """A bare repo that stays empty: it advertises "no refs" to a first push without creating its space."""
    path = platform.settings.data_dir / "git-empty" / "empty.git"
    storage.init_bare(path)
    return path


def hooks_dir(platform: Platform) -> Path:
    return platform.settings.data_dir / "git-hooks"


def _error(exc: SpaceportError) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="Spaceport"'} if exc.status == 401 else {}
    return PlainTextResponse(exc.message + "\n", status_code=exc.status, headers=headers)


@router.get("/spaces/{owner}/{name}/info/refs", include_in_schema=False)
async def info_refs(owner: str, name: str, request: Request) -> Response:
    return await git_http(owner, name, "info/refs", request)


@router.post("/spaces/{owner}/{name}/git-upload-pack", include_in_schema=False)
async def upload_pack(owner: str, name: str, request: Request) -> Response:
    return await git_http(owner, name, "git-upload-pack", request)


@router.post("/spaces/{owner}/{name}/git-receive-pack", include_in_schema=False)
async def receive_pack(owner: str, name: str, request: Request) -> Response:
    return await git_http(owner, name, "git-receive-pack", request)


async def git_http(owner: str, name: str, tail: str, request: Request) -> Response:
    platform = get_platform(request)
    try:
        req = _parse(owner, name, tail, request.query_params.get("service"))
        repo = await run_in_threadpool(_authorize, platform, req, request.headers.get("authorization"))
    except SpaceportError as exc:
        return _error(exc)
    before = storage.head_sha(repo) if req.service == "git-receive-pack" else None
    return await _run_backend(platform, request, req, repo, before)


def _backend_argv(platform: Platform, req: GitRequest) -> list[str]:
    """A push runs Spaceport's hooks (`-c` reaches receive-pack through GIT_CONFIG_PARAMETERS), whatever
    hooks a repo has of its own."""
    if req.service != "git-receive-pack":
        return ["git", "http-backend"]
    return ["git", "-c", f"core.hooksPath={hooks_dir(platform)}", "http-backend"]


def _push_env(platform: Platform, req: GitRequest, repo: Path) -> dict[str, str]:
    """What a push's hooks learn from the controller: the repo and the storage limits."""
    if req.service != "git-receive-pack":
        return {}
    return {quota.REPO_ENV: str(repo), **quota.StorageLimits.from_settings(platform.settings).env()}


def _cgi_env(request: Request, req: GitRequest, repo: Path) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "GIT_PROJECT_ROOT": str(repo.parent),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": f"/{repo.name}{req.path_info}",
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.url.query,
        "CONTENT_TYPE": request.headers.get("content-type", ""),
        "REMOTE_ADDR": request.client.host if request.client else "",
        "REMOTE_USER": "spaceport",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    for header in ("content-encoding", "git-protocol"):
        if header in request.headers:
            env["HTTP_" + header.upper().replace("-", "_")] = request.headers[header]
    if "content-length" in request.headers:
        env["CONTENT_LENGTH"] = request.headers["content-length"]
    return env


async def _run_backend(platform: Platform, request: Request, req: GitRequest, repo: Path, before: str | None) -> Response:
    proc = await asyncio.create_subprocess_exec(
        *_backend_argv(platform, req), env=_cgi_env(request, req, repo) | _push_env(platform, req, repo),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    feeder = asyncio.create_task(_feed(request, proc))
    assert proc.stdout is not None
    status, headers = await _read_cgi_headers(proc.stdout)
    # The whole request body goes in before the response starts: a StreamingResponse listens for a
    # disconnect by reading the request's messages, which would steal the rest of a large pack (early EOF).
    await feeder
    body = _stream_body(platform, proc, feeder, req, repo, before, request.headers.get("authorization"))
    return StreamingResponse(body, status_code=status, headers=headers)


async def _feed(request: Request, proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    try:
        async for chunk in request.stream():
            if not chunk:  # a GET's empty body: nothing to write (the backend may already have exited)
                continue
            proc.stdin.write(chunk)
            await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError, RuntimeError):  # RuntimeError: uvloop's "handler is closed"
        pass
    finally:
        proc.stdin.close()


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status, headers = 200, dict[str, str]()
    while True:
        line = (await stdout.readline()).decode("latin-1").rstrip("\r\n")
        if not line:
            return status, headers
        key, _, value = line.partition(":")
        if key.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers[key.strip()] = value.strip()


async def _stream_body(platform: Platform, proc: asyncio.subprocess.Process, feeder: asyncio.Task[None],
                       req: GitRequest, repo: Path, before: str | None, auth: str | None) -> AsyncIterator[bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    while chunk := await proc.stdout.read(65536):
        yield chunk
    await feeder
    err = await proc.stderr.read()
    code = await proc.wait()
    if code != 0:
        log.warning("git http-backend exited %s for %s/%s: %s", code, req.owner, req.name, err.decode(errors="replace")[-500:])
    if req.service == "git-receive-pack" and req.path_info == "/git-receive-pack":
        await run_in_threadpool(_after_push, platform, req, repo, before, auth)


def _after_push(platform: Platform, req: GitRequest, repo: Path, before: str | None, auth: str | None) -> None:
    """A push that moved main builds. The first push to a new space creates its row only now that it has
    succeeded; a refused first push leaves nothing behind (its empty repo is removed)."""
    after = storage.head_sha(repo)
    with platform.tx() as session:
        space = spaces.find_space(session, req.owner, req.name)
        if space is None:
            if not storage.has_refs(repo):
                storage.delete_repo(repo)
                return
            token = token_from_header(auth)
            principal = authenticate_token(session, token) if token else None
            space = spaces.create_space(session, platform.settings.repos_dir, principal, req.owner, req.name)
        if after is None or after == before:
            return
        build = builds.record_push(session, space, repo, after)
        platform.queue_build(session, build.id)
    log.info("push to %s/%s moved main to %s", req.owner, req.name, after[:12])
