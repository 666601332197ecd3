"""Writing files so that a crash never leaves a half-written one: write a temporary sibling, then
rename it over the target (atomic on POSIX); on any failure the temporary file is removed and the
previous version of the target, if any, stays as it was."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path` to write; it replaces `path` when the block ends
    without an exception. The parent folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def regular_file_within(path: str | Path, roots: list[Path] | tuple[Path, ...]) -> Path:
    """`path` resolved (symlinks followed), when it is a regular file inside one of `roots`
    (resolved too). FileNotFoundError when nothing is there; `UnsafeFile` when it resolves outside
    every root (a symlink or `..` that leaves them) or is not a regular file (a device, a FIFO, a
    folder). The service and the indexer read only what passes."""
    import stat

    from partsearch.errors import UnsafeFile

    resolved = Path(path).resolve(strict=True)
    if not any(resolved == root or root in resolved.parents for root in (Path(r).resolve() for r in roots)):
        raise UnsafeFile(f"{path} leads outside the folders it may be read from")
    if not stat.S_ISREG(resolved.stat().st_mode):
        raise UnsafeFile(f"{path} is not a regular file")
    return resolved
