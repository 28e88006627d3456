"""The Ray Data actor pool that runs a corpus's shards: one model per actor, Ray's own logs kept out of
the terminal, Ctrl-C remembered until a shard boundary, a progress bar over shards."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
from pathlib import Path

from .. import interrupts
from ..errors import LensError
from . import watchdog


def _check_reachable(address: str) -> None:
    """One line, exit 2, for an address nobody answers at (ray.init would wait a minute)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise LensError(f"cannot reach a Ray cluster at {address!r} (expected HOST:PORT of its head node)") from None


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Send what Ray's C++ core writes to file descriptor 2 into `path`; lens's own lines (written
    through sys.stderr) still reach the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = sys.stderr
    try:
        os.dup2(log, 2)
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=terminal.encoding, errors="replace")
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = terminal
        os.dup2(saved, 2)
        os.close(saved)
        os.close(log)


def _check_fits(actors: int, cpus: float, nodes: list[float]) -> None:
    """One line, exit 2, for a pool Ray could never schedule (it would wait forever, silently)."""
    fit = sum(math.floor(n / cpus + 1e-9) for n in nodes)
    if fit >= actors:
        return
    biggest = max(nodes, default=0)
    if cpus > biggest:
        raise LensError(f"--cpus-per-actor {cpus:g} is more than any Ray node has (the largest has {biggest:g} CPUs)")
    raise LensError(f"{actors} actors of {cpus:g} CPUs do not fit on this Ray cluster ({fit} fit: "
                    f"{', '.join(f'{n:g}' for n in nodes)} CPUs per node); lower --actors or --cpus-per-actor")


class _Pool:
    """Ray (joined at `address`, else started locally on first use, and stopped at the end) and its
    actor pools: `map` runs jobs on `actors` copies of an actor class, each holding one model."""

    def __init__(self, address: str | None, actors: int, cpus_per_actor: float | None, log: Path):
        self.address, self.actors, self.cpus, self.log = address, actors, cpus_per_actor, log
        self.ray, self._stack = None, contextlib.ExitStack()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stack.close()  # stops the Ray we started, then gives the terminal its stderr back

    def start(self):
        if self.ray is not None:
            return
        self._stack.enter_context(_stderr_to(self.log))  # Ray's own log lines go to a file, not the terminal
        self._stack.enter_context(interrupts.catching())
        import ray
        import ray.data

        for name in ("ray", "ray.data"):  # lens prints its own stages and progress bar
            logging.getLogger(name).setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.enable_operator_progress_bars = False
        ctx.execution_options.preserve_order = True
        ctx.print_on_execution_start = False
        self.ray = ray
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                      configure_logging=False)
            if not self.address:  # a Ray we start dies with us, however we die
                self._stack.callback(watchdog.stop, watchdog.start())
            try:
                ray.init(address=self.address, **kw) if self.address else ray.init(**kw)
            except ConnectionError as e:
                raise LensError(f"cannot join the Ray cluster at {self.address!r}: "
                                f"{str(e).splitlines()[0][:160]}") from None
            self._stack.callback(ray.shutdown)
            interrupts.reinstall()  # ray.init's own SIGTERM handler exits with code 1
        nodes = [float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        if self.cpus is None:  # an equal share of the cluster's CPUs
            self.cpus = max(1.0, sum(nodes) // self.actors)
        _check_fits(self.actors, self.cpus, nodes)

    def map(self, actor_class, args: tuple, jobs: dict[int, dict]):
        """(shard, result) for each {shard: job}, in shard order; each actor is built as
        actor_class(*args, threads=its share of CPUs)."""
        import pickle

        if not jobs:
            return
        self.start()
        rows = [{"shard": int(i), "job": pickle.dumps(j, protocol=5)} for i, j in sorted(jobs.items())]
        ds = self.ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            actor_class, fn_constructor_args=args, fn_constructor_kwargs={"threads": max(1, int(self.cpus))},
            batch_size=1, compute=self.ray.data.ActorPoolStrategy(size=min(self.actors, len(rows))),
            num_cpus=self.cpus)
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
            interrupts.check()  # a Ctrl-C whose KeyboardInterrupt something inside Ray swallowed
            yield int(batch["shard"][0]), pickle.loads(batch["result"][0])


def _bar(total: int, initial: int, show: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="prompt", desc="lens: corpus", file=sys.stderr, disable=not show,
                leave=False, smoothing=0.1)


# ------------------------------------------------------------------ outputs
