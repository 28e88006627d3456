"""Writing a user's output file without ever leaving half of it, or replacing what was there with a
broken one: write a temporary sibling, then rename it into place. A target that exists and is not
a regular file (/dev/null, a FIFO) is written in place: renaming over it would replace the device."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from collections.abc import Callable

from .errors import LensError


def output_path(path, what: str = "output") -> Path:
    """Check an output path before any work: not empty, not a folder, its folder exists and takes a new
    file (/proc and /sys do not), so that no output is replaced before another one fails."""
    if path is None or str(path).strip() == "":
        raise LensError(f"the {what} path is empty")
    path = Path(path)
    if path.is_dir():
        raise LensError(f"{path} is a folder; give a file name for the {what}")
    if not path.parent.is_dir():
        raise LensError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.exists() and not path.is_file():  # /dev/null, a FIFO: written in place, not replaced
        if not os.access(path, os.W_OK):
            raise LensError(f"cannot write {path}: permission denied")
        return path
    probe = path.with_name(f".{path.name}.probe-{os.getpid()}")  # how replace_atomic will write it
    try:
        probe.open("xb").close()
        probe.unlink()
    except OSError as e:
        raise LensError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def replace_atomic(path, write: Callable[[Path], object]) -> None:
    """The one way lens replaces a file: `write(tmp)` on a temporary sibling, its data flushed to disk,
    renamed over `path`, and the folder's entry flushed too, so that neither an interruption nor a
    power cut leaves half a file (a manifest, a report, a saved explanation, a corpus's state)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder: the rename is still atomic
        pass
    finally:
        os.close(fd)


def write_atomic(path, write: Callable[[Path], None], what: str = "output") -> Path:
    """Call `write(tmp)` on a temporary sibling of `path`, then rename it over `path`."""
    path = output_path(path, what)
    try:
        special = path.exists() and not stat.S_ISREG(path.stat().st_mode)
    except OSError:
        special = False
    if special:
        try:
            write(path)
        except OSError as e:
            raise LensError(f"cannot write {path}: {e.strerror or e}") from None
        return path
    try:
        replace_atomic(path, write)
    except OSError as e:
        raise LensError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def savez_atomic(path, arrays: dict) -> None:
    """np.savez through a temporary sibling renamed into place: an interrupted run leaves no half file."""
    import numpy as np

    replace_atomic(path, lambda tmp: np.savez(tmp, **arrays))  # tmp ends in .npz: savez adds no suffix


def same_file(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or os.path.samefile(a, b)
    except OSError:
        return False
