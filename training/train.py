"""Train an encoder with the 2DMSE objective (or an ablation), on CPU, one GPU, or many.

    python -m training.train --base mpnet-base --objective 2dmse --data scifact-train scifact-titles \\
        --steps 1000 --batch-size 32 --lr 2e-5 --lora --out runs/mpnet-2dmse
    python -m training.train ... --resume            # continue from the last checkpoint in --out
    python -m training.train ... --objective st-matryoshka2d   # the peer: sentence-transformers' loss
    accelerate launch -m training.train ...          # several GPUs or nodes: the same script

Each step takes one batch of pairs from one recipe (recipes are mixed in proportion to their size),
runs ONE staged forward pass over both sides, pools every layer, and feeds the loss
(:class:`adaptive_retrieval.losses.TwoDMatryoshkaLoss`). The batch order and every random draw of the
loss are functions of ``--seed`` and the step number, so a resumed run continues exactly where it left.

``--out`` receives ``checkpoints/step-N`` (accelerate state + ``trainer_state.json``; the last
``--keep`` are kept), and at the end ``model/``: a sentence-transformers directory (transformer,
pooling, normalisation) that ``Encoder.from_pretrained`` and ``SentenceTransformer`` both load, with
``adaptive_retrieval_training.json`` (base model and its hash, objective, data, steps, seed, git
commit, machine, wall time of the last run and of all runs a resumed run spans); with ``--lora``, also
``adapter/`` (the LoRA weights alone).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptive_retrieval import Encoder
from adaptive_retrieval.datasets import default_data_dir
from adaptive_retrieval.losses import OBJECTIVES, TwoDMatryoshkaLoss
from adaptive_retrieval.models import write_sentence_transformers_config
from adaptive_retrieval.reporting import source
from training.data import PairSet, load_recipes

#: The peer objective: sentence-transformers' Matryoshka2dLoss (MultipleNegativesRankingLoss inside) run by
#: this same script, on the same model object, batches, LoRA, optimizer, schedule and seed.
PEER = "st-matryoshka2d"
DEFAULT_DATA_DIR = default_data_dir()  # $ADAPTIVE_RETRIEVAL_DATA or the cache folder
METADATA = "adaptive_retrieval_training.json"


class StagedForward(nn.Module):
    """The encoder's staged forward as one module, so that DDP (under ``accelerate launch``) sees the call
    and synchronises gradients. Returns pooled states of every layer, ``(n_layers, batch, hidden)``."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.model = encoder.model
        self.encoder = encoder

    def forward(self, token_ids: list[list[int]]) -> torch.Tensor:
        return self.encoder.pooled_layers(token_ids=token_ids)


def schedule(sets: list[PairSet], steps: int, batch_size: int, seed: int) -> list[tuple[int, list[int]]]:
    """The whole run's batches, ``(recipe index, pair indices)``: each recipe is shuffled epoch by epoch,
    and recipes are drawn in proportion to their size. Deterministic in ``seed``."""
    rng = random.Random(seed)
    orders = [[] for _ in sets]
    batches = []
    weights = [len(s) for s in sets]
    for _ in range(steps):
        r = rng.choices(range(len(sets)), weights=weights)[0]
        if len(orders[r]) < batch_size:
            epoch = list(range(len(sets[r])))
            rng.shuffle(epoch)
            orders[r] += epoch
        batches.append((r, orders[r][:batch_size]))
        orders[r] = orders[r][batch_size:]
    return batches


def git_commit() -> str | None:
    """The commit of the code that trains (this file's checkout), or ``None`` outside one."""
    return source(Path(__file__).resolve().parent)["commit"]


def save_model(encoder: Encoder, peft_model: Any, out: Path, metadata: dict[str, Any]) -> Path:
    """Write ``out/model`` (a sentence-transformers dir with merged weights) and ``out/adapter`` (LoRA)."""
    target, tmp = out / "model", out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model = encoder.model
    if peft_model is not None:
        peft_model.save_pretrained(out / "adapter")
        model = peft_model.merge_and_unload()  # LoRA folded into the weights: a plain model again
    model.save_pretrained(tmp)
    encoder.tokenizer.save_pretrained(tmp)
    write_sentence_transformers_config(
        tmp,
        pooling=encoder.pooling,
        hidden_size=encoder.hidden_size,
        max_length=metadata["max_length_inference"],
    )
    (tmp / METADATA).write_text(json.dumps(metadata, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def make_peer(args: argparse.Namespace, encoder: Encoder, sets: list[PairSet]):
    """The peer's step: sentence-transformers' ``Matryoshka2dLoss`` over ``MultipleNegativesRankingLoss``
    (the 2DMSE setting: one layer and one dim drawn per step, KL to the last layer), computed by a
    ``SentenceTransformer`` whose transformer *is* ``encoder.model`` (LoRA included), so that everything
    but the loss is shared with our objective. Its draws use Python's ``random``, reseeded every step."""
    import random as pyrandom

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        Matryoshka2dLoss,
        MultipleNegativesRankingLoss,
    )

    from adaptive_retrieval.losses import default_dims
    from adaptive_retrieval.models import resolve_model_path

    scored = [s.name for s in sets if s.labels is not None]
    if scored:
        raise SystemExit(f"--objective {PEER} takes (query, positive) recipes only; drop {', '.join(scored)}")
    if args.teacher_weight > 0:
        raise SystemExit(f"--objective {PEER} has no teacher term; drop --teacher-weight")
    st = SentenceTransformer(str(resolve_model_path(args.base)), device=str(encoder.device))
    # one model object: the peer trains the weights we save (sentence-transformers >= 6 keeps it in .model)
    setattr(st[0], "model" if hasattr(st[0], "model") else "auto_model", encoder.model)
    if st[0].auto_model is not encoder.model:
        raise RuntimeError("could not share the model with sentence-transformers' Transformer module")
    st.max_seq_length = encoder.max_length
    dims = list(args.dims or default_dims(encoder.hidden_size))
    loss = Matryoshka2dLoss(
        st, MultipleNegativesRankingLoss(st), matryoshka_dims=[*dims, encoder.hidden_size]
    )
    st.train()

    def step(n: int, texts_a: list[str], texts_b: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        pyrandom.seed(args.seed * 1_000_003 + n)
        prepare = getattr(st, "preprocess", None) or st.tokenize  # sentence-transformers >= 6 renamed it
        features = [
            {k: v.to(encoder.device) if isinstance(v, torch.Tensor) else v for k, v in prepare(t).items()}
            for t in (texts_a, texts_b)
        ]
        value = loss(features, torch.zeros(len(texts_a)))
        return value, {"st_matryoshka2d": float(value.detach())}

    # what the peer's loss was configured with, for the run's metadata (not our objective's settings)
    step.config = json.loads(json.dumps(loss.get_config_dict(), default=str))  # type: ignore[attr-defined]
    return step


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(
        (p for p in (out / "checkpoints").glob("step-*") if (p / "trainer_state.json").is_file()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    return found[-1] if found else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="mpnet-base", help="named model or directory to start from")
    ap.add_argument("--objective", choices=(*OBJECTIVES, PEER), default="2dmse")
    ap.add_argument("--data", nargs="+", default=["scifact-train", "scifact-titles"], help="data recipes")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument(
        "--dev-fraction", type=float, default=0.1, help="SciFact train queries held out for selection"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    ap.add_argument("--max-length", type=int, default=128, help="token limit while training")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dims", type=int, nargs="+", help="matryoshka dims (default 8..512 below hidden size)")
    ap.add_argument(
        "--layers", type=int, nargs="+", help="shallower layers the objective draws from (default 1..L-1)"
    )
    ap.add_argument("--kl-weight", type=float, default=1.0)
    ap.add_argument("--kl-temperature", type=float, default=1.0)
    ap.add_argument("--angle-weight", type=float, default=0.02)
    ap.add_argument(
        "--teacher-weight", type=float, default=0.0, help="align to the frozen base model (0: off)"
    )
    ap.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of every weight")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=int, default=32)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--keep", type=int, default=2, help="checkpoints kept")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    args = ap.parse_args(argv)
    for name in ("steps", "batch_size", "max_length", "checkpoint_every", "keep", "lora_r"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.batch_size < 2:
        ap.error("--batch-size must be >= 2: the losses compare pairs within a batch")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    accelerator = Accelerator()
    torch.manual_seed(args.seed)
    state_file = args.out / "run_args.json"
    resume_from = latest_checkpoint(args.out) if args.resume else None
    if args.resume and resume_from is None:
        print(f"--resume: no checkpoint in {args.out}; starting from step 0", file=sys.stderr)
    if resume_from is not None and (args.out / "model" / METADATA).is_file():
        done = json.loads((resume_from / "trainer_state.json").read_text())["step"]
        if done >= args.steps:  # finished: saving again would only overwrite its metadata (wall time, loss)
            print(f"{args.out} has finished all {args.steps} steps: {args.out / 'model'}", file=sys.stderr)
            return args.out / "model"
    if (
        resume_from is None
        and (args.out / "checkpoints").exists()
        and any((args.out / "checkpoints").iterdir())
    ):
        raise SystemExit(
            f"{args.out} already holds checkpoints; pass --resume to continue, or choose another --out"
        )

    encoder = Encoder.from_pretrained(args.base, device=str(accelerator.device))
    max_length_inference = encoder.max_length
    base_fingerprint = encoder.fingerprint
    encoder.max_length = min(args.max_length, encoder.max_length)
    peft_model = None
    if args.lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear"
        )
        peft_model = get_peft_model(encoder.model, config)  # injects adapters into encoder.model in place
    encoder.model.train()
    sets = load_recipes(args.data, args.data_dir, dev_fraction=args.dev_fraction, seed=args.seed)
    batches = schedule(sets, args.steps, args.batch_size, args.seed)
    peer = make_peer(args, encoder, sets) if args.objective == PEER else None
    loss_fn = TwoDMatryoshkaLoss(
        encoder.n_layers,
        encoder.hidden_size,
        objective="2dmse" if peer else args.objective,
        dims=args.dims,
        layers=args.layers,
        kl_weight=args.kl_weight,
        kl_temperature=args.kl_temperature,
        angle_weight=args.angle_weight,
        teacher_weight=args.teacher_weight,
        seed=args.seed,
    )
    if args.teacher_weight > 0 and not args.lora:
        raise SystemExit(
            "--teacher-weight needs --lora: the frozen teacher is the base model with its adapter off"
        )
    forward = StagedForward(encoder)
    params = [p for p in encoder.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, min(args.warmup, args.steps), args.steps)
    forward, optimizer, scheduler = accelerator.prepare(forward, optimizer, scheduler)
    start = 0
    seconds_before: float | None = 0.0  # the training time of the steps resumed from, if known
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        resumed = json.loads((resume_from / "trainer_state.json").read_text())
        start = resumed["step"]
        seconds_before = resumed.get("seconds_total")  # absent in checkpoints older than this field
        print(f"resumed from {resume_from} at step {start}", file=sys.stderr)
    elif accelerator.is_main_process:
        args.out.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))

    t0, losses = time.time(), []
    bar = tqdm(
        range(start, args.steps),
        desc="train",
        disable=not accelerator.is_main_process,
        initial=start,
        total=args.steps,
    )
    for step in bar:
        r, rows = batches[step]
        pairs = sets[r]
        ids_a = encoder.tokenize([pairs.a[i] for i in rows])
        ids_b = encoder.tokenize([pairs.b[i] for i in rows])
        labels = (
            None
            if pairs.labels is None
            else torch.tensor([pairs.labels[i] for i in rows], device=encoder.device)
        )
        teacher = (None, None)
        if args.teacher_weight > 0:
            with torch.no_grad(), peft_model.disable_adapter():
                teacher = (
                    encoder.pooled_layers(token_ids=ids_a)[-1],
                    encoder.pooled_layers(token_ids=ids_b)[-1],
                )
        loss_fn.generator.manual_seed(args.seed * 1_000_003 + step)  # the draws of step N are fixed
        if peer is not None:
            loss, terms = peer(step, [pairs.a[i] for i in rows], [pairs.b[i] for i in rows])
        else:
            loss, terms = loss_fn(forward(ids_a), forward(ids_b), labels, *teacher)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}", data=pairs.name)
        done = step + 1
        if done % args.checkpoint_every == 0 or done == args.steps:
            accelerator.wait_for_everyone()
            ckpt = args.out / "checkpoints" / f"step-{done}"
            accelerator.save_state(str(ckpt))
            if accelerator.is_main_process:
                elapsed = time.time() - t0
                (ckpt / "trainer_state.json").write_text(
                    json.dumps(
                        {
                            "step": done,
                            "recent_loss": sum(losses[-20:]) / len(losses[-20:]),
                            "last_terms": terms,
                            "seconds_this_run": elapsed,
                            "seconds_total": None if seconds_before is None else seconds_before + elapsed,
                        }
                    )
                )
                for old in sorted(
                    (args.out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1])
                )[: -args.keep]:
                    shutil.rmtree(old, ignore_errors=True)

    wall = time.time() - t0
    encoder.model.eval()
    encoder.max_length = max_length_inference
    metadata = {
        "base_model": args.base,
        "base_fingerprint": base_fingerprint,
        "objective": args.objective,
        "objective_impl": "sentence-transformers Matryoshka2dLoss(MultipleNegativesRankingLoss)"
        if peer
        else "adaptive_retrieval.losses.TwoDMatryoshkaLoss",
        "loss": peer.config  # type: ignore[attr-defined]
        if peer
        else {
            "dims": list(loss_fn.dims),
            "layers": list(loss_fn.layers),
            "kl_weight": args.kl_weight,
            "kl_temperature": args.kl_temperature,
            "angle_weight": args.angle_weight,
            "teacher_weight": args.teacher_weight,
        },
        "data": [{"recipe": s.name, "pairs": len(s), "source": s.source, **s.held_out} for s in sets],
        "scifact_test_used": False,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup": args.warmup,
        "max_length_train": args.max_length,
        "max_length_inference": max_length_inference,
        "seed": args.seed,
        "lora": {"r": args.lora_r, "alpha": args.lora_alpha, "target_modules": "all-linear"}
        if args.lora
        else None,
        "git_commit": git_commit(),
        "wall_seconds_last_run": round(wall, 1),
        # the training time of the steps this model holds, summed over resumed runs (None: unknown,
        # resumed from a checkpoint that predates the count); steps lost to an interruption are not in it
        "wall_seconds_total": None if seconds_before is None else round(seconds_before + wall, 1),
        "seconds_per_step": round(wall / max(1, args.steps - start), 3),
        "machine": {
            "platform": platform.platform(),
            "device": str(accelerator.device),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "processes": accelerator.num_processes,
        },
        "final_recent_loss": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
    }
    target = args.out / "model"
    if accelerator.is_main_process:
        target = save_model(encoder, peft_model, args.out, metadata)
        print(
            f"saved {target} ({math.fsum(losses) / max(1, len(losses)):.4f} mean loss this run)",
            file=sys.stderr,
        )
    return target


if __name__ == "__main__":
    main()
