"""The `lens` command. Exit codes: 0 ok, 2 bad input (one line on stderr), 1 unexpected failure,
130 interrupted."""
from __future__ import annotations

import argparse
import os
import sys

from .errors import LensError


def _stage(msg: str) -> None:
    print(f"lens: {msg}", file=sys.stderr, flush=True)


def cmd_export(args) -> int:
    try:
        from .export import export_model
    except ImportError as e:
        raise LensError(f"exporting needs the export extra (pip install 'lens[export]'): missing {e.name}") from None
    path = export_model(args.model, models_dir=args.models_dir, name=args.name, force=args.force,
                        validate=not args.no_validate, revision=args.revision, progress=_stage)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="lens", description="Explain what GPT-2-family language models do "
                                "when they generate text.")
    p.add_argument("--version", action="version", version=f"lens {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="convert a Hugging Face GPT-2 checkpoint into a lens model folder")
    e.add_argument("model", help="hub id (distilgpt2, gpt2, microsoft/DialoGPT-small, ...) or a local "
                   "save_pretrained folder")
    e.add_argument("--models-dir", help="model store (default: $LENS_MODELS or ./models)")
    e.add_argument("--name", help="folder name inside the store (default: from the model id)")
    e.add_argument("--revision", help="hub revision (branch, tag or commit)")
    e.add_argument("--force", action="store_true", help="export again even if the model is there")
    e.add_argument("--no-validate", action="store_true", help="skip the comparison with PyTorch")
    e.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LensError as e:
        print(f"lens: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lens: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line for users, the traceback on request
        if os.environ.get("LENS_DEBUG"):
            raise
        print(f"lens: internal error: {e.__class__.__name__}: {e} (set LENS_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
