"""Mistral: Llama with a sliding attention window on every layer."""
from .common import LlamaLike

family = LlamaLike("mistral", "Mistral 7B (sliding window), Ministral",
                   ("mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.3"))
