"""Atomic outputs: write beside the target, then rename into place, so a failure leaves nothing half-written.

Files (text, or whatever a writer callback streams) and whole folders (shard sets, synthetic trees).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from fer_dist.errors import UserError


def check_target(target: Path, overwrite: bool, ours: Callable[[Path], bool], what: str) -> None:
    """Refuse a target that is a file, or a non-empty folder without --overwrite or not built by us."""
    if target.exists() and not target.is_dir():
        raise UserError(f"output path {target} is a file; give a folder path for the {what}")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not overwrite:
        raise UserError(f"output folder {target} already exists and is not empty; "
                        f"pass --overwrite to replace it or choose another folder")
    if not ours(target):
        raise UserError(f"refusing to overwrite {target}: it does not look like {what}; "
                        f"remove it yourself or choose another folder")


def _missing_parents(target: Path) -> list[Path]:
    """Parent folders of `target` that do not exist yet, deepest first."""
    missing = []
    for parent in target.absolute().parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; an existing target is moved aside first and deleted after."""
    if not target.exists():
        os.rename(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / target.name)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(target: Path, overwrite: bool, ours: Callable[[Path], bool],
                  what: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target)
    check_target(target, overwrite, ours, what)
    created = _missing_parents(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)   # mkdtemp makes it private; the result should be readable like any folder
    try:
        yield tmp
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in created:
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise


def write_file(path: Path, write: Callable[[object], None], mode: str = "w") -> Path:
    """Call `write(fh)` on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """Atomically replace `path` with `text` (UTF-8)."""
    return write_file(path, lambda fh: fh.write(text), mode="w")
