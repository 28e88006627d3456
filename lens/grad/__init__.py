"""Gradient-based input attributions over the family adapters' JAX forwards (`lens.families`)."""
from .attribution import Attribution, Attributor, enable_compilation_cache

__all__ = ["Attributor", "Attribution", "enable_compilation_cache"]
