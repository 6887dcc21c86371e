"""Tiny random models built in code: no files, no network, seconds to build."""

from __future__ import annotations

import os
import random

# the tests never reach a model hub: a Hugging Face id resolves from a cache a test lays out, or fails fast
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
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


@pytest.fixture(scope="session")
def tiny_encoder() -> Encoder:
    return make_encoder("bert")


@pytest.fixture(scope="session")
def tiny_mpnet() -> Encoder:
    return make_encoder("mpnet")


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return random_texts(60, seed=1)
