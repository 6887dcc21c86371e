"""What a configuration costs per query: layers, encoder FLOPs, search FLOPs, bytes per document."""

from __future__ import annotations

from collections.abc import Sequence

from .encoder import Encoder


def encoder_flops(encoder: Encoder, n_tokens: int, layers: int) -> float:
    """FLOPs (2 per multiply-add) of running ``layers`` transformer layers over ``n_tokens`` tokens.

    Per layer: Q, K, V and output projections (4 H^2 per token), the feed-forward block (2 H I per
    token), and attention scores and weighted sums (2 S H per token). Embeddings, norms and pooling
    are negligible and left out.
    """
    h = encoder.hidden_size
    inner = int(getattr(encoder.model.config, "intermediate_size", 4 * h))
    per_token_macs = 4 * h * h + 2 * h * inner + 2 * n_tokens * h
    return 2.0 * layers * n_tokens * per_token_macs


def mean_encoder_flops(encoder: Encoder, queries: Sequence[str], layers: int) -> float:
    """Mean over ``queries`` of :func:`encoder_flops` at each query's own token count."""
    lengths = [len(ids) for ids in encoder.tokenize(list(queries))]
    return sum(encoder_flops(encoder, n, layers) for n in lengths) / len(lengths)


def search_flops(n_docs: int, coarse_dim: int, candidates: int, fine_dim: int) -> float:
    """Flat coarse search over every document, then re-ranking ``candidates`` fine vectors."""
    return 2.0 * (n_docs * coarse_dim + candidates * fine_dim)
