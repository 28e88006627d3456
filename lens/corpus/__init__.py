"""Corpus mode: explain and profile thousands of prompts on a Ray actor pool (`lens corpus`)."""
from .run import run_corpus

__all__ = ["run_corpus"]
