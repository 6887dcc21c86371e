"""Encoding throughput: adaptive_retrieval's Encoder.encode vs sentence-transformers' encode.

Same model, same texts, same batch size, same process, rounds interleaved (the order rotates) so that
neither side gets a warmer machine. Prints docs/s for each and the ratio ours/theirs (>= 1.0: we are
not slower). Ours runs the linear layers the library chose for the model on this processor
(``cpu_linear.choose_path``: oneDNN's, the GELU fused, or MKL's, whichever ran a layer faster); a third side,
ours on the other path (a second copy of the model, ``cpu_linear.set_path``), shows what the choice is worth; a fourth,
ours in bfloat16 (:meth:`adaptive_retrieval.Encoder.bfloat16`, an approximation: its vectors' cosine to
float32's is printed; ``evals/precision_eval.py`` measures its answers), what ``precision="bfloat16"`` buys,
beside a fifth, sentence-transformers with its model loaded in bfloat16. On CPU ours runs a batch of long
texts in parts (``encoder.CPU_FORWARD_BYTES``); two more sides show what that is worth: ours in whole
batches, and sentence-transformers asked for batches of our first part's size.

    python -m benchmarks.bench_encode --model minilm-l6 --n 1000 --batch-size 32
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from adaptive_retrieval import Encoder, cpu_linear
from adaptive_retrieval import encoder as encoder_module
from adaptive_retrieval.cpu_linear import BFLOAT16_MARGIN, bfloat16_native
from adaptive_retrieval.models import resolve_model_path
from adaptive_retrieval.reporting import machine_line as machine
from adaptive_retrieval.reporting import settings, write_json
from benchmarks.bench_common import DEFAULT_DATA_DIR, scifact_texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--n", type=int, default=1000, help="SciFact corpus texts to encode")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    texts = scifact_texts(args.data_dir, args.n)
    ours = Encoder.from_pretrained(args.model)
    theirs = SentenceTransformer(str(resolve_model_path(args.model)), device="cpu")
    theirs.max_seq_length = ours.max_length

    def run_ours() -> np.ndarray:
        return ours.encode(texts, [ours.full_view], batch_size=args.batch_size, show_progress=False)[
            ours.full_view
        ]

    chosen = cpu_linear.path_of(ours.model) or "mkl"  # None: oneDNN's op missing or switched off
    other_path = "mkl" if chosen == "onednn" else "onednn"
    other = Encoder.from_pretrained(args.model)  # a second copy on the path not chosen
    cpu_linear.set_path(other.model, other_path)

    def run_other() -> np.ndarray:
        return other.encode(texts, [other.full_view], batch_size=args.batch_size, show_progress=False)[
            other.full_view
        ]

    def run_theirs() -> np.ndarray:
        return theirs.encode(
            texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False
        )

    ours.encode(texts[:64], batch_size=args.batch_size)  # warm-up both
    theirs.encode(texts[:64], batch_size=args.batch_size)
    half = ours.bfloat16()

    def run_half() -> np.ndarray:
        return half.encode(texts, [half.full_view], batch_size=args.batch_size, show_progress=False)[
            half.full_view
        ]

    half.encode(texts[:64], batch_size=args.batch_size)
    # sentence-transformers in bfloat16 too (its model loaded in that dtype): the like-for-like comparison
    theirs_half = SentenceTransformer(
        str(resolve_model_path(args.model)), device="cpu", model_kwargs={"dtype": torch.bfloat16}
    )
    theirs_half.max_seq_length = ours.max_length
    theirs_half.encode(texts[:64], batch_size=args.batch_size)

    def run_theirs_half() -> np.ndarray:
        return theirs_half.encode(
            texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False
        ).astype(np.float32)

    # the size of ours' first forward pass (the longest texts): sentence-transformers asked for that batch
    token_counts = sorted((len(t) for t in ours.tokenize(texts)), reverse=True)
    per_token = encoder_module.activation_bytes(ours.model)
    part = len(
        encoder_module.forward_batches(np.arange(len(texts)), token_counts, args.batch_size, per_token)[0]
    )

    def run_theirs_parts() -> np.ndarray:
        return theirs.encode(texts, batch_size=part, normalize_embeddings=True, show_progress_bar=False)

    def run_ours_whole() -> np.ndarray:
        kept, encoder_module.CPU_FORWARD_BYTES = encoder_module.CPU_FORWARD_BYTES, None
        try:
            return run_ours()
        finally:
            encoder_module.CPU_FORWARD_BYTES = kept

    sides = [
        ("adaptive_retrieval", run_ours),
        ("adaptive_retrieval_whole_batches", run_ours_whole),
        ("sentence_transformers_parts", run_theirs_parts),
        ("adaptive_retrieval_other", run_other),
        ("sentence_transformers", run_theirs),
        ("adaptive_retrieval_bfloat16", run_half),
        ("sentence_transformers_bfloat16", run_theirs_half),
    ]
    seconds: dict[str, list[float]] = {name: [] for name, _ in sides}
    outputs = {}
    for r in range(args.rounds):
        for name, fn in sides[r % len(sides) :] + sides[: r % len(sides)]:  # who goes first rotates
            t0 = time.perf_counter()
            outputs[name] = fn()
            seconds[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}: {name:22s} {seconds[name][-1]:7.2f} s", flush=True)

    rate = {name: len(texts) / statistics.median(s) for name, s in seconds.items()}
    ratio = rate["adaptive_retrieval"] / rate["sentence_transformers"]
    # each round's own ratio (the two ran back to back): the spread of the comparison
    per_round = [t / o for o, t in zip(seconds["adaptive_retrieval"], seconds["sentence_transformers"])]
    other_ratio = rate["adaptive_retrieval_other"] / rate["sentence_transformers"]
    other_per_round = [
        t / o for o, t in zip(seconds["adaptive_retrieval_other"], seconds["sentence_transformers"])
    ]
    diff = float(np.abs(outputs["adaptive_retrieval"] - outputs["sentence_transformers"]).max())
    half_ratio = rate["adaptive_retrieval_bfloat16"] / rate["sentence_transformers"]
    half_per_round = [
        t / o for o, t in zip(seconds["adaptive_retrieval_bfloat16"], seconds["sentence_transformers"])
    ]
    half_cosine = float((outputs["adaptive_retrieval_bfloat16"] * outputs["adaptive_retrieval"]).sum(1).min())
    half_to_half = rate["adaptive_retrieval_bfloat16"] / rate["sentence_transformers_bfloat16"]
    whole_ratio = rate["adaptive_retrieval_whole_batches"] / rate["sentence_transformers"]
    parts_ratio = rate["adaptive_retrieval"] / rate["sentence_transformers_parts"]
    parts_per_round = [
        t / o for o, t in zip(seconds["adaptive_retrieval"], seconds["sentence_transformers_parts"])
    ]
    print(f"\nmachine: {machine()}")
    print(
        f"model {args.model}, {len(texts)} SciFact texts, batch {args.batch_size}, median of {args.rounds} rounds\n"
    )
    print("| encoder | docs/s |\n|---|---|")
    for name, value in rate.items():
        print(f"| {name} | {value:.1f} |")
    print(
        f"\nratio ours/theirs: {ratio:.3f} (of the medians; per round {min(per_round):.3f}-{max(per_round):.3f}, "
        f"median {statistics.median(per_round):.3f})   max |difference| of the vectors: {diff:.2e}"
    )
    print(f"linear layers chosen here: {chosen}")
    print(
        f"ratio ours on the other path ({other_path}) / theirs: {other_ratio:.3f} (per round "
        f"{min(other_per_round):.3f}-{max(other_per_round):.3f})"
    )
    print(
        f"ratio ours in bfloat16 / theirs: {half_ratio:.3f} (per round {min(half_per_round):.3f}-"
        f"{max(half_per_round):.3f}; native bfloat16 here: {bfloat16_native()}); least cosine to ours in "
        f"float32: {half_cosine:.6f}"
    )
    print(f"ratio ours in bfloat16 / theirs in bfloat16: {half_to_half:.3f}")
    print(
        f"ours' forward passes: {part} texts (the longest; batch {args.batch_size}); ratio ours in whole batches / "
        f"theirs: {whole_ratio:.3f}; ours / theirs asked for batches of {part}: {parts_ratio:.3f} (per round "
        f"{min(parts_per_round):.3f}-{max(parts_per_round):.3f})"
    )
    probe = cpu_linear.bfloat16_speedup()  # what precision="auto" decides by (cpu_linear.bfloat16_faster)
    print(
        f"the bfloat16 probe: its product {probe:.2f}x float32's (auto picks bfloat16 at >= {BFLOAT16_MARGIN})"
    )
    if args.out:
        write_json(
            args.out,
            settings(
                args={k: str(v) for k, v in vars(args).items()},
                seconds=seconds,
                docs_per_s=rate,
                ratio=ratio,
                ratio_per_round=per_round,
                linear_path=chosen,
                other_path=other_path,
                ratio_other=other_ratio,
                ratio_other_per_round=other_per_round,
                max_abs_diff=diff,
                ratio_bfloat16=half_ratio,
                ratio_bfloat16_per_round=half_per_round,
                bfloat16_native=bfloat16_native(),
                bfloat16_probe_speedup=probe,
                bfloat16_min_cosine=half_cosine,
                ratio_bfloat16_to_theirs_bfloat16=half_to_half,
                cpu_forward_bytes=encoder_module.CPU_FORWARD_BYTES,
                forward_part=part,
                ratio_whole_batches=whole_ratio,
                ratio_to_theirs_parts=parts_ratio,
                ratio_to_theirs_parts_per_round=parts_per_round,
            ),
        )


if __name__ == "__main__":
    main()
