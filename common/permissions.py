"""Owner-only state: what the system writes under CREDIT_RISK_HOME (every applicant's data among it) is readable by
the user running it and nobody else: folders 0700, files 0600.

`keep_private(home)` runs where the project's processes start (`make up`, `make run`, `make run-dag`, `make train`,
the services' own commands): a umask every process started from there inherits, and a pass that takes group and
other permissions off what an older version (or a third-party writer with its own modes) left in `home`. Standard
library only: both environments import it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

UMASK = 0o077
SHARED_BITS = stat.S_IRWXG | stat.S_IRWXO


def keep_private(home: Path) -> list[Path]:
    """Set this process's umask to owner-only and tighten `home`; returns what had to be tightened."""
    os.umask(UMASK)
    home.mkdir(parents=True, exist_ok=True)
    return tighten(home)


def _shared(root: Path) -> Iterator[tuple[Path, int]]:
    """(path, permission bits) of `root` and everything below it that group or others may use; symlinks are left
    out (their own mode is not used)."""
    for folder, folders, files in os.walk(root):
        paths = (Path(folder) / name for name in (*folders, *files))
        for path in (root, *paths) if folder == str(root) else paths:
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & SHARED_BITS:
                yield path, stat.S_IMODE(mode)


def tighten(root: Path) -> list[Path]:
    """Take the group and other bits off `root` and everything below it; returns the paths changed."""
    changed = []
    for path, mode in _shared(root):
        path.chmod(mode & ~SHARED_BITS)
        changed.append(path)
    return changed


def exposed(root: Path) -> list[str]:
    """`'0644 path'` for every file or folder under `root` (itself included) that group or others may use."""
    return [f"{mode:04o} {path}" for path, mode in _shared(root)]
