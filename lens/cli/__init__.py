"""The `lens` command. Exit codes: 0 ok, 2 bad input (one line on stderr), 1 unexpected failure,
130 interrupted. Choices and defaults come from `lens.settings`, as for the API and `lens serve`.
  parser.py    subcommands and options (settings' options derived from their fields: options.py)
  commands.py  what each subcommand does"""
from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

from .. import interrupts
from ..errors import LensError
from .commands import VERBOSITY, _quiet_third_parties
from .parser import build_parser

__all__ = ["main", "entry", "build_parser"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    VERBOSITY["level"] = 0 if args.quiet else 2 if args.verbose else 1
    if not args.verbose:
        _quiet_third_parties()
    try:
        with interrupts.catching():
            return args.func(args)
    except KeyboardInterrupt:
        _interrupted()
    except LensError as e:
        if interrupts.received():  # a library turned our interrupt into an error of its own
            _interrupted()
        print(f"lens: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one line for users, the traceback on request
        if interrupts.received():
            _interrupted()
        if os.environ.get("LENS_DEBUG"):
            raise
        print(f"lens: internal error: {e.__class__.__name__}: {e} (set LENS_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


def _interrupted() -> NoReturn:
    """Our own clean-up has run (the export's temporary folder is gone, Ray is stopped). Leave at once:
    a second interrupt that torch's or JAX's shutdown hooks raise would otherwise end the process by
    SIGINT instead of exit code 130 (seen about once in ten interrupted exports)."""
    print("lens: interrupted", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(130)


def entry() -> None:
    """The `lens` console script: `main`, then exit with its code. An interrupt arriving after the
    command has ended, or while Python shuts down, still means exit code 130 or the command's own."""
    try:
        code = main()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except KeyboardInterrupt:
        _interrupted()
    sys.exit(code)
