"""Git LFS HTTP endpoints at the URL git-lfs derives from a space's git remote.

Remote http://HOST/spaces/OWNER/NAME -> LFS endpoint http://HOST/spaces/OWNER/NAME.git/info/lfs (git-lfs
adds `.git/info/lfs`; huggingface_hub builds the same URL); the form without `.git` is served too.
  POST .../objects/batch          the batch API, with git's credentials (HTTP Basic USER:TOKEN or Bearer)
  PUT  .../objects/OID?sig=...    upload (signed link from the batch answer)
  GET  .../objects/OID?sig=...    download (signed link)
  POST .../verify?sig=...         verify after upload (signed link)
  .../locks...                    501: git-lfs then stops verifying locks for this remote and pushes on.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from controller.api.deps import get_platform, token_from_header
from controller.domain.errors import BadRequest, SpaceportError
from controller.domain.lfs import Pointer
from controller.domain.naming import validate_name
from controller.services import lfs
from controller.services.accounts import authenticate_token
from controller.services.platform import Platform

router = APIRouter(tags=["git-lfs"])
MEDIA = "application/vnd.git-lfs+json"
BASE = "/spaces/{owner}/{name}/info/lfs"


class ObjectResponse(FileResponse):
    chunk_size = 1024 * 1024  # read off the event loop in large pieces (64 KiB thread hops cost throughput)


def _target(owner: str, name: str) -> lfs.Target:
    name = name.removesuffix(".git")
    validate_name(owner, "owner")
    validate_name(name, "space name")
    return lfs.Target(owner, name)


def _answer(body: object, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=MEDIA)


def _error(exc: SpaceportError) -> JSONResponse:
    response = _answer({"message": exc.message}, exc.status)
    if exc.status == 401:
        response.headers["LFS-Authenticate"] = 'Basic realm="Spaceport"'
        response.headers["WWW-Authenticate"] = 'Basic realm="Spaceport"'
    return response


def _base(request: Request, platform: Platform) -> str:
    return platform.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")


@router.post(BASE + "/objects/batch", include_in_schema=False)
async def batch(owner: str, name: str, request: Request) -> Response:
    platform = get_platform(request)
    try:
        target = _target(owner, name)
        parsed = lfs.parse_batch(_json(await request.body()))
        answer = await run_in_threadpool(_batch, platform, request, target, parsed)
    except SpaceportError as exc:
        return _error(exc)
    return _answer(answer)


def _batch(platform: Platform, request: Request, target: lfs.Target, parsed: lfs.BatchRequest) -> dict[str, object]:
    with platform.tx() as session:
        token = token_from_header(request.headers.get("authorization"))
        principal = authenticate_token(session, token) if token else None
        lfs.authorize(session, platform, principal, target, parsed.operation)
    return lfs.batch(platform, _base(request, platform), target, parsed)


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise BadRequest("The Git LFS request body is not valid JSON.") from None


def _signed(request: Request, platform: Platform, op: str, target: lfs.Target, oid: str) -> Pointer:
    q = request.query_params
    return lfs.check_signature(platform, op, target, oid, q.get("size", ""), q.get("expires", ""), q.get("sig", ""))


@router.put(BASE + "/objects/{oid}", include_in_schema=False)
async def upload(owner: str, name: str, oid: str, request: Request) -> Response:
    platform = get_platform(request)
    try:
        target = _target(owner, name)
        pointer = _signed(request, platform, "upload", target, oid)
        await lfs.receive(platform, target, pointer, request.stream())
    except SpaceportError as exc:
        return _error(exc)
    return Response(status_code=200)


@router.get(BASE + "/objects/{oid}", include_in_schema=False)
async def download(owner: str, name: str, oid: str, request: Request) -> Response:
    platform = get_platform(request)
    try:
        target = _target(owner, name)
        pointer = _signed(request, platform, "download", target, oid)
        path = lfs.object_path(platform, target, pointer)
    except SpaceportError as exc:
        return _error(exc)
    return ObjectResponse(path, media_type="application/octet-stream")  # objects never change: no torn reads


@router.post(BASE + "/verify", include_in_schema=False)
async def verify(owner: str, name: str, request: Request) -> Response:
    platform = get_platform(request)
    try:
        target = _target(owner, name)
        pointer = _signed(request, platform, "verify", target, request.query_params.get("oid", ""))
        lfs.verify(platform, target, pointer, _json(await request.body() or b"null"))
    except SpaceportError as exc:
        return _error(exc)
    return _answer({"message": "ok"})


@router.api_route(BASE + "/locks", methods=["GET", "POST"], include_in_schema=False)
@router.api_route(BASE + "/locks/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
async def locks(owner: str, name: str) -> Response:
    return _answer({"message": "Spaceport does not implement Git LFS file locking; pushes never need locks here."}, 501)
