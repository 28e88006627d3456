"""Where exported models live; shared by the exporter and the runtime (no heavy imports)."""
from __future__ import annotations

import os
import re
from pathlib import Path


def default_models_dir() -> Path:
    """`$LENS_MODELS`, else `models/` in the current folder."""
    return Path(os.environ.get("LENS_MODELS") or Path.cwd() / "models")


def model_name(source: str) -> str:
    """Folder name for a source: the hub id's last part, the local folder's name, or a GGUF file's stem."""
    if source.endswith(".gguf"):
        return re.sub(r"[^A-Za-z0-9._-]", "_", Path(source).stem) or "model"
    name = Path(source.rstrip("/")).name if os.path.isdir(source) else source.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "model"
