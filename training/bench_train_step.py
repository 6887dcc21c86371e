"""Training step time: our 2DMSE objective vs sentence-transformers' Matryoshka2dLoss, side by side.

Same base model, same batches of (title, abstract) pairs from SciFact's corpus, same batch size, max
length, learning rate and seed; steps interleaved (ours, theirs, ours, ...) in one process so neither
side gets a warmer machine. Both draw one layer and one matryoshka dim per step (the 2DMSE setting);
ours runs one staged forward pass and pools every layer, theirs runs the model with all hidden states.
Prints the median step time of each and the ratio ours / theirs (target <= 1.0); ``--out`` also writes
them, every step's time and the run's header (machine, load, command, commit) to ``results.json`` there.

    python -m training.bench_train_step --model minilm-l6 --steps 5 --batch-size 32
    python -m training.bench_train_step --model minilm-l6 --steps 10 --out docs/results/train-step
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from adaptive_retrieval import Encoder
from adaptive_retrieval.datasets import default_data_dir
from adaptive_retrieval.losses import TwoDMatryoshkaLoss, default_dims
from adaptive_retrieval.models import resolve_model_path
from adaptive_retrieval.reporting import machine_line as machine
from adaptive_retrieval.reporting import settings, write_json
from training.data import scifact_titles
from training.train import StagedForward, schedule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side (after one warm-up step each)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    ap.add_argument("--out", type=Path, help="write results.json here")
    args = ap.parse_args()
    header = settings()  # the load average before the run

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        Matryoshka2dLoss,
        MultipleNegativesRankingLoss,
    )

    torch.manual_seed(args.seed)
    pairs = scifact_titles(args.data_dir)
    batches = schedule([pairs], args.steps + 1, args.batch_size, args.seed)

    ours = Encoder.from_pretrained(args.model, max_length=args.max_length)
    ours.model.train()
    forward = StagedForward(ours)
    dims = list(default_dims(ours.hidden_size))
    our_loss = TwoDMatryoshkaLoss(
        ours.n_layers, ours.hidden_size, dims=dims, angle_weight=0.0, seed=args.seed
    )
    our_opt = torch.optim.AdamW([p for p in ours.model.parameters() if p.requires_grad], lr=args.lr)

    theirs = SentenceTransformer(str(resolve_model_path(args.model)), device="cpu")
    theirs.max_seq_length = args.max_length
    # theirs trains only the dims it is given, ours always trains the full width too: give theirs the full width
    their_loss = Matryoshka2dLoss(
        theirs, MultipleNegativesRankingLoss(theirs), matryoshka_dims=[*dims, ours.hidden_size]
    )
    their_opt = torch.optim.AdamW(theirs.parameters(), lr=args.lr)
    theirs.train()

    def our_step(rows: list[int]) -> None:
        ids_a = ours.tokenize([pairs.a[i] for i in rows])
        ids_b = ours.tokenize([pairs.b[i] for i in rows])
        loss, _ = our_loss(forward(ids_a), forward(ids_b))
        loss.backward()
        our_opt.step()
        our_opt.zero_grad()

    def their_step(rows: list[int]) -> None:
        features = [theirs.tokenize([side[i] for i in rows]) for side in (pairs.a, pairs.b)]
        loss = their_loss(features, torch.zeros(len(rows)))
        loss.backward()
        their_opt.step()
        their_opt.zero_grad()

    seconds: dict[str, list[float]] = {"adaptive_retrieval": [], "sentence_transformers": []}
    for n, (_, rows) in enumerate(batches):
        for name, step in (("adaptive_retrieval", our_step), ("sentence_transformers", their_step)):
            t0 = time.perf_counter()
            step(rows)
            if n > 0:  # step 0 warms both up
                seconds[name].append(time.perf_counter() - t0)
                print(f"step {n}: {name:22s} {seconds[name][-1]:6.2f} s", flush=True)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    print(f"\nmachine: {machine()}")
    print(
        f"model {args.model}, batch {args.batch_size} (title, abstract) pairs, {args.max_length} tokens, "
        f"median of {args.steps} steps\n"
    )
    print("| objective | s/step |\n|---|---|")
    print(f"| adaptive_retrieval TwoDMatryoshkaLoss (2dmse) | {median['adaptive_retrieval']:.2f} |")
    print(f"| sentence-transformers Matryoshka2dLoss(MNRL) | {median['sentence_transformers']:.2f} |")
    ratio = median["adaptive_retrieval"] / median["sentence_transformers"]
    print(f"\nratio ours/theirs: {ratio:.3f}")
    if args.out is not None:
        write_json(
            args.out / "results.json",
            {
                **header,
                "load_average_after": settings()["load_average"],
                "labels": "none: a timing of training steps on SciFact title-abstract pairs; no qrels",
                "model": args.model,
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "steps": args.steps,
                "seconds": seconds,
                "median_seconds": median,
                "ratio": ratio,
            },
        )


if __name__ == "__main__":
    main()
