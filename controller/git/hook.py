"""The pre-receive hook of every push through Spaceport's git HTTP: storage limits, then LFS objects.

git runs it (DATA_DIR/git-hooks/pre-receive, see controller.git.storage.push_hook) with the push's ref
updates on stdin and its objects in quarantine; a non-zero exit refuses the whole push (git drops the
quarantine) and what it prints reaches the pusher as `remote: ...`. Standard library and domain only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from controller.git import lfs, quota


def main() -> int:
    repo = os.environ.get(quota.REPO_ENV)
    if not repo:
        return 0  # not a push through Spaceport's git HTTP
    if quota.main() != 0:
        return 1
    updates = [tuple(line.split()[:3]) for line in sys.stdin.read().splitlines() if len(line.split()) >= 3]
    try:
        missing = lfs.missing_objects(Path(repo), updates, dict(os.environ))  # type: ignore[arg-type]
    except RuntimeError as exc:
        print(f"Spaceport could not check this push's Git LFS pointers: {exc}", file=sys.stderr)
        return 1
    if missing:
        print(lfs.refusal(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
