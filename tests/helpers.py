"""Shared test helpers: tiny random models built in code (no files, no network, seconds to build), random
texts over their vocabulary, a synthetic BEIR-format dataset, and a per-layer call counter."""

from __future__ import annotations

import json
import random

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertModel,
    ElectraConfig,
    ElectraModel,
    MPNetConfig,
    MPNetModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaModel,
)

from adaptive_retrieval import Encoder

WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "this",
    "it",
    "be",
    "are",
    "were",
    "not",
    "or",
    "an",
    "which",
    "cell",
    "cells",
    "protein",
    "gene",
    "genes",
    "cancer",
    "risk",
    "vitamin",
    "bone",
    "fracture",
    "patients",
    "study",
    "trial",
    "effect",
    "increase",
    "decrease",
    "reduce",
    "blood",
    "heart",
    "brain",
    "mouse",
    "human",
    "expression",
    "level",
    "levels",
    "disease",
    "therapy",
    "drug",
    "dose",
    "response",
    "immune",
    "virus",
    "infection",
    "model",
    "data",
    "result",
    "results",
    "analysis",
    "clinical",
    "acid",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )


def _common(n_layers: int, hidden: int) -> dict:
    return dict(
        vocab_size=len(SPECIALS) + len(WORDS),
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=80,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )


def make_model(kind: str = "bert", n_layers: int = 12, hidden: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "bert":
        return BertModel(BertConfig(**_common(n_layers, hidden)), add_pooling_layer=False).eval()
    if kind == "roberta":
        return RobertaModel(RobertaConfig(**_common(n_layers, hidden)), add_pooling_layer=False).eval()
    if kind == "mpnet":
        return MPNetModel(MPNetConfig(**_common(n_layers, hidden)), add_pooling_layer=False).eval()
    if kind == "xlm-roberta":
        return XLMRobertaModel(XLMRobertaConfig(**_common(n_layers, hidden)), add_pooling_layer=False).eval()
    if kind == "electra":  # narrower embeddings, projected up to the hidden size
        return ElectraModel(ElectraConfig(**_common(n_layers, hidden), embedding_size=hidden // 2)).eval()
    raise ValueError(kind)


def make_encoder(kind: str = "bert", n_layers: int = 12, hidden: int = 32, seed: int = 0, **kw) -> Encoder:
    return Encoder(make_model(kind, n_layers, hidden, seed), make_tokenizer(), name=f"tiny-{kind}", **kw)


def random_texts(n: int, seed: int = 0, min_words: int = 3, max_words: int = 30) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(min_words, max_words))) for _ in range(n)]


QUERIES = [
    "vitamin bone fracture risk",
    "immune response to virus infection",
    "gene expression in cancer cells",
]


class LayerCounter:
    """Counts calls of every transformer layer through forward hooks (removed on exit)."""

    def __init__(self, encoder: Encoder) -> None:
        self.layers = encoder.backbone.layers
        self.calls = [0] * len(self.layers)

    def __enter__(self) -> LayerCounter:
        self.handles = [
            # each layer's last block: every way a backbone runs a layer calls it once
            layer.output.register_forward_hook(lambda *_, i=i: self.calls.__setitem__(i, self.calls[i] + 1))
            for i, layer in enumerate(self.layers)
        ]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


def stream(corpus, fail_after=None):
    """The corpus as a generator of (id, text) pairs, optionally raising after ``fail_after`` pairs."""
    for i, text in enumerate(corpus):
        if fail_after is not None and i == fail_after:
            raise KeyboardInterrupt("simulated interruption")
        yield f"d{i}", text


N_DOCS, N_QUERIES = 40, 6


def write_dataset(root, n_docs=N_DOCS, n_queries=N_QUERIES):
    """Each query is the exact text of one document, and that document is its only relevant one."""
    folder = root / "beir" / "tiny"
    (folder / "qrels").mkdir(parents=True)
    texts = random_texts(n_docs, seed=11, min_words=4)
    with open(folder / "corpus.jsonl", "w") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for i in range(n_queries):
            fh.write(json.dumps({"_id": f"q{i}", "text": texts[3 * i]}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for i in range(n_queries):
            fh.write(f"q{i}\td{3 * i}\t1\n")
    return root


SQ8_HALF_STEP = 1 / 255 + 1e-6
"""How far a coordinate read back from the default (SQ8) coarse index may be from the one added: half of
one of its 255 steps over [-1, 1]."""
