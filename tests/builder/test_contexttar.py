"""builder/contexttar.py: a build context unpacks for buildah on every Python Spaceport runs on, with the "data"
filter's checks (3.11.4+ has the filter; Debian bookworm's 3.11.2, in Spaceport's image, does not: there the
checks are made by hand). Both ways are run here, the second with the filter hidden, as on that Python."""

from __future__ import annotations

import io
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.contexttar import extract_context
from builder.errors import BuildFailure


@pytest.fixture(params=["filter", "by-hand"])
def python(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "by-hand":
        monkeypatch.delattr(tarfile, "data_filter")
    return str(request.param)


def make_tar(*members: tuple[tarfile.TarInfo, bytes]) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r")


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


def test_a_context_unpacks_with_its_relative_links_and_without_setuid_bits(python: str, tmp_path: Path) -> None:
    tar = make_tar((entry("Dockerfile"), b"FROM debian:bookworm-slim\n"), (entry("app", tarfile.DIRTYPE, mode=0o755), b""),
                   (entry("app/run.sh", mode=0o4777), b"echo hi\n"), (entry("run", tarfile.SYMTYPE, "app/run.sh"), b""))  # fmt: skip
    extract_context(tar, tmp_path)
    assert (tmp_path / "Dockerfile").read_text() == "FROM debian:bookworm-slim\n"
    assert (tmp_path / "run").is_symlink() and (tmp_path / "run").read_text() == "echo hi\n"
    assert stat.S_IMODE((tmp_path / "app" / "run.sh").stat().st_mode) == 0o755  # setuid, group/other write cleared


ATTACKS: dict[str, Callable[[], list[tuple[tarfile.TarInfo, bytes]]]] = {
    "absolute link": lambda: [(entry("passwd", tarfile.SYMTYPE, "/etc/passwd"), b"")],
    "link that climbs out": lambda: [(entry("up", tarfile.SYMTYPE, "../../../etc"), b"")],
    "name that climbs out": lambda: [(entry("../escaped"), b"x")],
    "file written through a link": lambda: [(entry("d", tarfile.SYMTYPE, "."), b""), (entry("d/../../x"), b"x")],
    "hard link to outside": lambda: [(entry("h", tarfile.LNKTYPE, "../../etc/passwd"), b"")],
    "device": lambda: [(entry("dev", tarfile.CHRTYPE), b"")],
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_what_a_repository_could_plant_fails_the_build_naming_the_file(python: str, attack: str,
                                                                       tmp_path: Path) -> None:
    dest = tmp_path / "context"
    dest.mkdir()
    members = ATTACKS[attack]()
    with pytest.raises(BuildFailure) as failure:
        extract_context(make_tar(*members), dest)
    message = str(failure.value)
    assert any(f"the build context's file {info.name!r} cannot be used" in message for info, _ in members), message
    assert "Remove it from the repository" in message
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "x").exists()
