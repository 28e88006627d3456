"""`python -m lens` runs the command line."""
from .cli import entry

entry()
