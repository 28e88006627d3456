"""Moving a finished export into the model store so that the store always holds a complete model,
and finishing what a killed export left behind. No heavy imports; `lens.store` runs `repair` before
it resolves a model, so any lens command cleans up after a dead one."""
from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

# .NAME.tmp@HOST@PID-xxxx (lens >= 0.3) or .NAME.tmp-PID-xxxx (lens 0.2, judged as this host's)
_DEBRIS = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)(@(?P<host>[^@/]+)@|-)(?P<pid>\d+)(-.*)?")


def _host() -> str:
    """This host as debris names it: a store shared by several hosts (cluster mode) must not take
    another host's export in progress, whose PID means nothing here, for a dead one."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "localhost"


def _owner() -> str:
    """This process as debris names it."""
    return f"@{_host()}@{os.getpid()}"


def work_dir(models_dir: Path, name: str) -> Path:
    """A temporary folder for an export into `models_dir/name`, named after this host and process so
    that another run can tell debris of a dead export from one in progress."""
    import tempfile
    return Path(tempfile.mkdtemp(prefix=f".{name}.tmp{_owner()}-", dir=models_dir))


def swap_into_place(new: Path, target: Path) -> None:
    """Put the folder `new` at `target` so that at every instant `target` is either the old model or
    the new one: one renameat2(RENAME_EXCHANGE) where Linux offers it, else two renames that
    `repair` completes if the process dies between them."""
    if target.exists() and _exchange(new, target):
        pause_for_tests("swapped")
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old model; if we die here, repair removes it
        return
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old{_owner()}")
        os.replace(target, old)
        pause_for_tests("between-renames")
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def pause_for_tests(point: str) -> None:
    """LENS_TEST_PAUSE=POINT:SECONDS sleeps at a named point, so the kill tests can hit it."""
    spec = os.environ.get("LENS_TEST_PAUSE", "")
    if spec.startswith(point + ":"):
        import time
        time.sleep(float(spec.split(":", 1)[1]))


def _exchange(a: Path, b: Path) -> bool:
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("LENS_NO_EXCHANGE"):  # the fallback, for tests
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    return renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0


def repair(models_dir: str | os.PathLike) -> None:
    """Finish what a killed export left: a model moved aside by a two-rename swap goes back into
    place (or is removed, if its successor made it), and temporary folders of dead processes go.
    Only this host's debris is judged: another host's is left to that host."""
    models_dir = Path(models_dir)
    try:
        entries = list(models_dir.iterdir())
    except OSError:
        return
    for p in entries:
        m = _DEBRIS.fullmatch(p.name)
        if not m or not p.is_dir() or m.group("host") not in (None, _host()) \
                or _alive(int(m.group("pid"))):
            continue
        target = models_dir / m.group("name")
        try:
            if m.group("kind") == "old" and not target.exists():
                os.replace(p, target)
            else:
                shutil.rmtree(p)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
