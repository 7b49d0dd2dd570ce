"""The one home for writing files: checked before the run, written whole or not at all, never
over an existing file.

A file is written to a hidden temporary name in its target folder and only then linked to its
name (``os.link`` fails if the name exists, so even a file that appears meanwhile is kept). On
any failure -- an error, Ctrl-C, a full disk -- the temporary file is removed and no file of
that name exists, so the same command can simply be run again.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .errors import MIDIOutputError


def _nearest_existing(path: Path) -> Path:
    p = path.parent
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_new_file(path, what: str, suffix: str | None = None) -> Path:
    """Before any slow work: ``path`` must not exist and its folder must take a new file."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if p.is_dir():
        raise MIDIOutputError(f"{what} {p} is a folder: give a file name inside it, e.g. {p / ('out' + (suffix or ''))}")
    if suffix and p.suffix.lower() != suffix:
        raise MIDIOutputError(f"{what} {p}: the file is written as {suffix}: give a name ending in {suffix}")
    if os.path.lexists(p):
        kind = "is a broken symbolic link" if p.is_symlink() and not p.exists() else "already exists"
        raise MIDIOutputError(f"{what} {p} {kind}: choose another name (nothing is overwritten)")
    anc = _nearest_existing(p)
    if not anc.is_dir():
        raise MIDIOutputError(f"{what} {p}: {anc} is a file, not a folder: choose another location")
    try:  # the only reliable test (permissions, read-only disks, /proc): make a file there
        fd, probe = tempfile.mkstemp(dir=anc, prefix=".midi-write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise MIDIOutputError(f"{what} {p}: cannot write in {anc} ({e.strerror or e}): "
                              f"choose a folder you can write to") from None
    return p


def _make_parents(folder: Path) -> list[Path]:
    made = []
    for d in reversed([folder, *folder.parents]):
        if not d.exists():
            d.mkdir()
            made.append(d)
    return made


def write_first_free(candidates: Iterable, write: Callable, what: str) -> Path:
    """``write(f)`` into a temporary file, then give it the first name in ``candidates`` that is
    free. Returns that path. Raises ``MIDIOutputError`` (and leaves nothing behind) on failure."""
    candidates = iter(candidates)
    first = Path(os.fspath(next(candidates)))
    folder = first.parent
    made: list[Path] = []
    tmp = None
    try:
        made = _make_parents(folder)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{first.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        path = first
        while True:
            try:
                _link(tmp, path)
                return path
            except FileExistsError:
                nxt = next(candidates, None)
                if nxt is None:
                    raise MIDIOutputError(f"{what} {path} already exists: choose another name "
                                          f"(nothing is overwritten)") from None
                path = Path(os.fspath(nxt))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MIDIOutputError(f"{what} {first}: the disk is full: free some space and run again "
                                  f"(nothing was written)") from None
        raise MIDIOutputError(f"{what} {first}: cannot write ({e.strerror or e}): "
                              f"choose a folder you can write to (nothing was written)") from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.remove(tmp)
        for d in reversed(made):  # folders this call made stay only if they hold the file
            _remove_dir(d)


def _remove_dir(d: Path) -> None:
    try:  # only an empty folder goes
        d.rmdir()
    except OSError:
        pass


def _link(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # a file system without hard links: check, then rename (a race is unlikely, not impossible)
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.rename(tmp, path)


def write_new(path, write: Callable, what: str = "output") -> Path:
    """Write one new file (see the module doc); ``write(f)`` gets a binary file object."""
    return write_first_free([path], write, what)


def write_new_bytes(path, data: bytes, what: str = "output") -> Path:
    return write_new(path, lambda f: f.write(data), what)


def remove_written(paths) -> None:
    """Undo the files of a run that failed part way (so the next run is not blocked by them)."""
    for p in paths:
        try:
            os.remove(p)
        except OSError:
            pass
