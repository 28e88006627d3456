"""The package version, in a module of its own: importing it runs nothing else of lens."""
__version__ = "0.3.0"
