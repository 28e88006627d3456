"""Analyses over the runtime's arrays: logit lens (rankings, layer predictions, watched tokens) and
neuron factors and clusters (NMF, PCA, k-means). Plain numpy in, plain numpy out."""
from .logit_lens import LogitLens
from .neurons import Clusters, Factors, cluster_neurons, factorize

__all__ = ["LogitLens", "Factors", "Clusters", "factorize", "cluster_neurons"]
