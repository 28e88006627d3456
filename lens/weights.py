"""The exported safetensors weights, read once per process and shared by the analyses."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=2)
def load(folder: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def config(folder: str) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())
