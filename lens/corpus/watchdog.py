"""`python -m lens.corpus.watchdog DRIVER_PID`, started by a driver that starts a local Ray: when the
driver is gone (its end of our stdin closes, whatever killed it, SIGKILL included), stop every Ray
process it started. Ray makes its own head processes die with the driver, but not the agents its
raylet starts (`ray::DashboardAgent`, `ray::RuntimeEnvAgent` were still running a minute after a
`kill -9` of `lens corpus`)."""
from __future__ import annotations

import select
import sys


def _is_ray(p) -> bool:
    try:
        return "ray" in " ".join([p.name(), *p.cmdline()]).lower()
    except Exception:  # noqa: BLE001 - gone, or not ours to read
        return False


def watch(driver_pid: int, poll: float = 0.25, grace: float = 3.0) -> None:
    import psutil

    try:
        driver = psutil.Process(driver_pid)
        before = {c.pid for c in driver.children(recursive=True)}
    except psutil.NoSuchProcess:
        return
    ours: dict[int, psutil.Process] = {}
    while True:  # remember the Ray processes the driver starts, until it is gone or says it is done
        try:
            for c in driver.children(recursive=True):
                if c.pid not in before and c.pid not in ours and _is_ray(c):
                    ours[c.pid] = c  # psutil keeps its start time: a reused PID is never taken for it
        except psutil.NoSuchProcess:
            break
        if select.select([sys.stdin], [], [], poll)[0] and not sys.stdin.buffer.read1(1):
            break  # EOF: the driver closed the pipe (it is done) or died
    alive = [p for p in ours.values() if p.is_running()]
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def start():
    """The watchdog for this process, as a `subprocess.Popen`; close its stdin to let it finish."""
    import os
    import subprocess

    return subprocess.Popen([sys.executable, "-m", "lens.corpus.watchdog", str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # a Ctrl-C at the terminal reaches the driver, not us


def stop(proc, timeout: float = 10.0) -> None:
    """Tell the watchdog the driver is done (Ray is shut down) and wait for it to sweep up."""
    import subprocess

    try:
        proc.stdin.close()
        proc.wait(timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()


if __name__ == "__main__":
    watch(int(sys.argv[1]))
