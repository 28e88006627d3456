"""The `lens` command. Exit codes: 0 ok, 2 bad input (one line on stderr), 1 unexpected failure,
130 interrupted. Choices and defaults come from `lens.settings`, as for the API and `lens serve`.
  parser.py    subcommands and options (settings' options derived from their fields: options.py)
  commands.py  what each subcommand does"""
from __future__ import annotations

import os
import sys

from ..errors import LensError
from .commands import VERBOSITY, _quiet_third_parties
from .parser import build_parser

__all__ = ["main", "build_parser"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    VERBOSITY["level"] = 0 if args.quiet else 2 if args.verbose else 1
    if not args.verbose:
        _quiet_third_parties()
    try:
        return args.func(args)
    except LensError as e:
        print(f"lens: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Our own clean-up has run (the export's temporary folder is gone). Leave at once: a second
        # interrupt that torch's or JAX's shutdown hooks raise would otherwise end the process by
        # SIGINT instead of exit code 130 (seen about once in ten interrupted exports).
        print("lens: interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)
    except Exception as e:  # noqa: BLE001 - one line for users, the traceback on request
        if os.environ.get("LENS_DEBUG"):
            raise
        print(f"lens: internal error: {e.__class__.__name__}: {e} (set LENS_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
