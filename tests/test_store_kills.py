"""`lens export --force` killed anywhere, SIGKILL included: the store always holds a complete,
loadable model, and the next lens command clears what the dead process left."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import lens
from lens.store import check_name
from lens.swap import repair

pytestmark = pytest.mark.slow


def _export(src, store, env=None):
    return subprocess.Popen([sys.executable, "-m", "lens", "export", str(src), "--models-dir", str(store),
                             "--force", "--no-validate"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, **(env or {})))


def _assert_complete(store, want_ids):
    model = lens.load("tiny", models_dir=store, verify="full")  # resolving repairs the store first
    np.testing.assert_array_equal(model.generate("Hello", 3).token_ids, want_ids)
    assert sorted(p.name for p in store.iterdir()) == ["tiny"], list(store.iterdir())


def test_sigkill_anywhere_never_loses_the_model(tiny, tmp_path):
    store = tmp_path / "m"
    shutil.copytree(tiny[1], store / "tiny")
    want = lens.load(tiny[1]).generate("Hello", 3).token_ids
    t0 = time.time()
    p = _export(tiny[0], store)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    full = time.time() - t0  # how long one export takes here
    _assert_complete(store, want)
    rng = random.Random(0)
    kills = [("", rng.uniform(0.3, full)) for _ in range(16)]
    kills += [(f"{point}:30", None) for point in ("swap", "swapped", "swap", "swapped")]
    for pause, delay in kills:
        p = _export(tiny[0], store, {"LENS_TEST_PAUSE": pause} if pause else None)
        if delay is None:  # kill while it waits at the named point of the swap
            for line in p.stderr:
                if b"[6/6]" in line:
                    break
            time.sleep(1.0 if pause.startswith("swap:") else 0.0)
            deadline = time.time() + 60
            while pause.startswith("swapped") and time.time() < deadline and \
                    not any(".tmp@" in q.name for q in store.iterdir() if q.name != "tiny"):
                time.sleep(0.05)
            time.sleep(0.5)
        else:
            time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        _assert_complete(store, want)


def test_a_kill_between_two_renames_is_repaired(tiny, tmp_path):
    """Without RENAME_EXCHANGE the swap is two renames; killed between them, the model sits aside
    under the dead process's name until the next lens command puts it back."""
    store = tmp_path / "m"
    shutil.copytree(tiny[1], store / "tiny")
    want = lens.load(tiny[1]).generate("Hello", 3).token_ids
    p = _export(tiny[0], store, {"LENS_NO_EXCHANGE": "1", "LENS_TEST_PAUSE": "between-renames:30"})
    deadline = time.time() + 120
    while time.time() < deadline and (store / "tiny").exists():
        time.sleep(0.05)
    assert not (store / "tiny").exists() and any(".old@" in q.name for q in store.iterdir())
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    _assert_complete(store, want)


def test_repair_leaves_a_live_export_alone(tmp_path):
    import socket
    host = socket.gethostname()
    busy = tmp_path / f".tiny.tmp@{host}@{os.getpid()}-abc"
    dead = tmp_path / f".tiny.tmp@{host}@999999999-abc"  # no such process
    legacy_busy, legacy_dead = tmp_path / f".tiny.tmp-{os.getpid()}-abc", tmp_path / ".tiny.tmp-999999999-abc"
    elsewhere = tmp_path / ".tiny.tmp@another-host.cluster@999999999-abc"  # a PID that means nothing here
    moved_aside = tmp_path / ".big.old@another-host.cluster@999999999"     # its swap between two renames
    for p in (busy, dead, legacy_busy, legacy_dead, elsewhere, moved_aside):
        p.mkdir()
    repair(tmp_path)
    assert busy.exists() and not dead.exists() and legacy_busy.exists() and not legacy_dead.exists()
    assert elsewhere.exists() and moved_aside.exists() and not (tmp_path / "big").exists()
    for bad in (".", "..", "a/b", "", "../x"):
        with pytest.raises(lens.LensError, match="must be letters"):
            check_name(bad)
