"""partsearch: text-based person search with part-level cross-modal correspondence.

Implements Park, Jeong, Kim, Kwak, *Improving Text-based Person Search via Part-level Cross-modal
Correspondence* (arXiv 2501.00318): coarse-to-fine embeddings aligned across image and text by
learnable tokens shared by both modalities, trained with a commonality-based margin ranking loss.
"""

__version__ = "0.1.0"

__all__ = ["Searcher", "load", "__version__"]


def __getattr__(name):
    if name == "Searcher":
        from partsearch.search.searcher import Searcher

        return Searcher
    if name == "load":
        from partsearch.runs import load

        return load
    raise AttributeError(name)
