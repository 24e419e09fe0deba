"""Requirement lines that point outside the repository are refused before anything runs (pure checks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.errors import CONFIG_ERROR, BuildFailure
from builder.requirements import check_requirement_files, has_local_paths, logical_lines

SECRET = "k3y-0f-th3-pl4tf0rm"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret.key").write_text(SECRET)
    source = tmp_path / "repo"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "pyproject.toml").write_text("[project]\nname='pkg'\nversion='0'\n")
    (source / "wheels").mkdir()
    return source


def refusal(source: Path) -> BuildFailure:
    with pytest.raises(BuildFailure) as info:
        check_requirement_files(source)
    assert info.value.stage == CONFIG_ERROR
    assert SECRET not in info.value.message
    return info.value


@pytest.mark.parametrize("line", [
    "-r {secret}", "-r{secret}", "--requirement={secret}", "-c {secret}", "--constraint {secret}",
    "-e {data}", "--editable={data}", "{data}", "../data", "./pkg/../../data", "~/x", "-r ../data/secret.key",
    "file://{secret}", "pkg @ file://{data}", "pkg@file:///etc", "FILE:///etc/passwd",
    "--index-url file://{data}", "-i {data}", "--extra-index-url=file:///srv", "-f {data}", "--find-links ../data",
    "-f file:///tmp", "-r ${{HOME}}/secret.key", "-r https://example.org/reqs.txt", "--python /usr/bin/python3",
    "--cert {secret}", "-rfoo", "pkg @ ../data",
])  # fmt: skip
def test_outside_pointing_lines_are_refused_naming_file_and_line(repo: Path, line: str) -> None:
    data = repo.parent / "data"
    text = line.format(secret=data / "secret.key", data=data)
    (repo / "requirements.txt").write_text(f"# deps\nsix\n{text}\n")
    failure = refusal(repo)
    assert failure.message.startswith("requirements.txt line 3 ")
    assert text.split()[0].split("=")[0][:2] in failure.message  # the user's own text is quoted back


def test_included_file_and_pre_requirements_are_checked_too(repo: Path) -> None:
    (repo / "pre-requirements.txt").write_text("-r sub/more.txt\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "more.txt").write_text("six\n\\\n-c ../../data/secret.key\n")
    failure = refusal(repo)
    assert failure.message.startswith("sub/more.txt line 2 ")
    assert "inside the repository" in failure.message


def test_symlinks_out_of_the_repo_are_refused(repo: Path) -> None:
    os.symlink(repo.parent / "data" / "secret.key", repo / "requirements.txt")
    assert "symlink" in refusal(repo).message
    (repo / "requirements.txt").unlink()
    os.symlink(repo.parent / "data", repo / "linked")
    (repo / "requirements.txt").write_text("./linked\n")
    assert "points outside the repository (./linked)" in refusal(repo).message
    (repo / "requirements.txt").write_text("-r linked/secret.key\n")
    refusal(repo)


def test_missing_include_is_a_config_error(repo: Path) -> None:
    (repo / "requirements.txt").write_text("-r nope.txt\n")
    assert "nope.txt is included by a requirement file but is not in the repository" in refusal(repo).message


@pytest.mark.parametrize("text", [
    "six\ngradio==5.0  # pinned\n", "-r sub.txt\n", "-c sub.txt\n", "./pkg\n", "pkg/\n", "-e ./pkg\n", "-e .\n",
    "-f wheels\n", "--find-links=./wheels\n", "--index-url https://pypi.org/simple\n",
    "--extra-index-url https://download.pytorch.org/whl/cpu\n", "--no-index\n--pre\n", "--only-binary :all:\n",
    "pkg @ https://example.org/pkg-1.0.tar.gz\n", "git+https://github.com/org/repo@v1#egg=repo\n",
    "numpy>=1.2; python_version > '3.8'\n", "torch==2.1 --hash=sha256:abc \\\n  --hash=sha256:def\n",
])  # fmt: skip
def test_ordinary_requirement_files_pass(repo: Path, text: str) -> None:
    (repo / "sub.txt").write_text("six\n")
    (repo / "requirements.txt").write_text(text)
    assert check_requirement_files(repo)[0] == "requirements.txt"


def test_checked_files_are_listed_in_order_and_cycles_end(repo: Path) -> None:
    (repo / "pre-requirements.txt").write_text("-r requirements.txt\n")
    (repo / "requirements.txt").write_text("-r a.txt\n")
    (repo / "a.txt").write_text("-c requirements.txt\nsix\n")
    assert check_requirement_files(repo) == ["pre-requirements.txt", "requirements.txt", "a.txt"]


def test_local_paths_are_detected(repo: Path) -> None:
    (repo / "requirements.txt").write_text("six\npkg @ https://example.org/p.tar.gz\n")
    assert not has_local_paths(repo)
    (repo / "requirements.txt").write_text("six\n./pkg\n")
    assert has_local_paths(repo)
    (repo / "requirements.txt").write_text("-e pkg\n")
    assert has_local_paths(repo)


def test_logical_lines_join_continuations_and_strip_comments() -> None:
    lines = logical_lines("# c\nsix \\\n  ==1.0 # x\n\n-r a#b.txt\n", "r.txt")
    assert [(line.number, line.text) for line in lines] == [(2, "six    ==1.0"), (5, "-r a#b.txt")]
