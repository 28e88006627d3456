"""`python -m lens.cli` runs the command line too."""
import sys

from . import main

sys.exit(main())
