"""The build sandbox contract: how the builder runs owner-controlled code (uv, build backends).

The builder never imports the controller; the controller injects an implementation (bubblewrap, an
unprivileged per-owner uid, a network that reaches only package indexes: controller/runtimes/buildbox.py).
One `BuildSandbox` serves one build of one owner.

* `prepare(path, seed=None)`: make a host directory writable by the build identity (its uv cache, the
  new venv, a scratch dir). Called before `wrap` for every writable path. With `seed` (a trusted,
  root-owned uv cache) a new `path` is first filled from it by hardlinks whose files stay read-only to
  the build identity (only the directories become its own), so builds start warm but can never change
  what the seed holds.
* `wrap(argv, ...)`: the argv (absolute launcher paths) and the fixed environment that run `argv`
  inside the sandbox, where only `writable` (host directory -> path inside, usually the same path),
  `readonly` (at their host paths) and the system (/usr, a minimal /etc) are visible, and `cwd` is
  the working directory. `env` is what the command needs
  inside (no host variables leak through).
* `seal(path)`: a finished environment: owned by root and not writable by any build identity, so no
  later build (of this owner or another) can change what apps run.
* `describe()`: one line for the build log ("sandboxed: uid 100123, egress: pypi.org, ...").
* `refused()`: the build log lines of network access refused so far ("build egress refused: HOST:443 is not
  an allowed package index host ..."), so a failed step can name that as its cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol


class BuildSandbox(Protocol):
    def prepare(self, path: Path, seed: Path | None = None) -> None: ...

    def wrap(self, argv: Sequence[str], *, writable: Mapping[Path, Path], readonly: Sequence[Path],
             env: Mapping[str, str], cwd: Path) -> tuple[list[str], dict[str, str]]: ...

    def seal(self, path: Path) -> None: ...

    def describe(self) -> str: ...

    def refused(self) -> Sequence[str]: ...
