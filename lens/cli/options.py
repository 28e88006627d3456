"""Command-line options derived from a settings dataclass's fields (inseq's `cli_arg` way): each field
made with `lens.settings.opt` becomes `--field-name` (or its own flag) with its help, its type from
the annotation, a switch for a bool, a repeatable option for a tuple; the settings class then
validates what was given, the one validator for the CLI, the API and `lens serve`."""
from __future__ import annotations

import argparse
from dataclasses import MISSING, fields


def _type(annotation: str):
    return int if annotation.startswith("int") else float if annotation.startswith("float") else str


def _shown(default) -> str:
    if isinstance(default, tuple):
        return ", ".join(map(repr, default)) or "none"
    return repr(default) if isinstance(default, str) else str(default)


def add_settings(parser: argparse.ArgumentParser, cls, skip: tuple = ()) -> None:
    """One option per field of `cls` that has CLI metadata; unset options leave the field's default."""
    for f in fields(cls):
        meta = dict(f.metadata)
        if "help" not in meta or f.name in skip:
            continue
        flag = meta.pop("flag") or "--" + f.name.replace("_", "-")
        help_text = meta.pop("help")
        if callable(meta.get("choices")):
            meta["choices"] = meta["choices"]()
        kw = dict(dest=f.name, default=argparse.SUPPRESS, **meta)
        if isinstance(f.default, bool):
            kw["action"] = "store_true"
        elif isinstance(f.default, tuple):
            kw["action"] = "append"
        else:
            kw["type"] = _type(str(f.type))
        if f.default is not MISSING and f.default is not None and not isinstance(f.default, bool):
            help_text += f" (default {_shown(f.default)})"
        parser.add_argument(flag, help=help_text, **kw)


def settings_from(args: argparse.Namespace, cls, **extra):
    """`cls` from the options given (tuples for repeatable ones) and `extra`; the rest stay defaults."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if "help" in f.metadata and hasattr(args, f.name)}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    return cls(**given, **extra)
