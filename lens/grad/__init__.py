"""JAX port of the GPT-2 forward and gradient-based input attribution over exported weights."""
from .attribution import METHODS, TARGETS, Attribution, Attributor, enable_compilation_cache

__all__ = ["Attributor", "Attribution", "METHODS", "TARGETS", "enable_compilation_cache"]
