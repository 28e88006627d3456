"""`python -m lens.cli` runs the command line too."""
from . import entry

entry()
