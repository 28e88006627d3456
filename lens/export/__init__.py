"""Hugging Face checkpoint -> ONNX model folder with named activation taps. Needs the `export` extra."""
from .convert import export_model
from .sources import resolve_source

__all__ = ["export_model", "resolve_source"]
