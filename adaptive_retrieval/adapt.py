"""Fitting a coarse head to the corpus being indexed, without labels.

One forward pass per document gives both the coarse layer's pooled state (the *student*) and the fine
view (the *teacher*). A linear head maps the first onto the coordinates of the second, so that the
coarse view ``(layer, dim)`` (the head's output cut to ``dim`` and normalised, as
:func:`~adaptive_retrieval.views.view_vector` makes every view) ranks the corpus as the fine view does.

:func:`fit_ridge_head` is the closed-form fit: ridge regression of the fine view's coordinates on its
own singular vectors (largest first), so that cutting the head's output to ``dim`` keeps the best
rank-``dim`` approximation of the fine view's inner products a linear map of the coarse state can give.

:func:`distil_head` refines a head by ranking distillation (the fine view's similarity distribution over
the documents, for query-like anchors, copied by the coarse view at several widths), optionally with a
relevance term on labelled queries; ``training/fit_coarse_head.py`` uses both to make shipped heads.

:func:`adapt_head` decides, label-free, whether and how to use it on a corpus: it holds out some of the
corpus' documents as pseudo-queries (a document is the query; its fine view's nearest other documents
are what the funnel must return), fits on the rest at a few ridge strengths, and measures each fit's
*fidelity* (the share of the pseudo-query's fine top ``k`` that the coarse shortlist of ``candidates``
holds) against the head the model already has (or none). The best fit is refitted on every document
and returned only when it beats that baseline; otherwise the model's own head stays. So a small corpus,
on which a fit cannot generalise, is never made worse than the model as shipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .views import view_vector

logger = logging.getLogger(__name__)

#: Ridge strengths tried, as fractions of the mean diagonal of the student's Gram matrix.
RIDGES: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
#: Fewer documents than this: nothing is fitted (too few to hold any out and learn from the rest).
MIN_DOCS = 50
#: Pseudo-queries held out of the fit, at most; the fraction of the documents otherwise.
MAX_CHECK = 500
CHECK_FRACTION = 0.2


def fit_ridge_head(
    student: np.ndarray | torch.Tensor,
    teacher: np.ndarray | torch.Tensor,
    ridge: float = 1e-2,
    basis_rows: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Ridge regression ``student @ W ~ teacher @ V`` (``V``: the teacher's right singular vectors, by
    singular value).

    ``student`` is ``(n, hidden)`` (a coarse layer's pooled states, normalised or not: a head is linear and
    the view is normalised after it), ``teacher`` ``(n, fine_dim)``, row for row the same texts. ``ridge``
    is the regularisation as a fraction of the mean diagonal of ``student.T @ student``. ``V`` comes from
    the first ``basis_rows`` rows of ``teacher`` (default all). Returns the head ``W``, float32
    ``(hidden, min(fine_dim, n))``, and fit statistics.
    """
    x = torch.as_tensor(np.asarray(student), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(teacher), dtype=torch.float64)
    if x.ndim != 2 or f.ndim != 2 or len(x) != len(f) or len(x) == 0:
        raise ValueError(
            f"student and teacher must be 2-D with the same rows, got {tuple(x.shape)} and {tuple(f.shape)}"
        )
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge!r}")
    _, s, vh = torch.linalg.svd(f[:basis_rows], full_matrices=False)
    target = f @ vh.T  # coordinates on the singular vectors, largest first
    gram = x.T @ x
    lam = ridge * float(torch.diagonal(gram).mean())
    w = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), x.T @ target)
    residual = float(((x @ w - target) ** 2).sum() / (target**2).sum())
    energy = (s**2).cumsum(0) / (s**2).sum()
    stats = {
        "relative_residual": residual,
        "lambda": lam,
        **{f"fine_energy_in_top_{d}": float(energy[d - 1]) for d in (32, 64, 128, 256) if d <= len(s)},
    }
    return w.float(), stats


def distil_head(
    head: torch.Tensor,
    anchors: tuple[torch.Tensor, torch.Tensor],
    docs: tuple[torch.Tensor, torch.Tensor],
    *,
    dims: list[int],
    steps: int,
    temperature: float = 0.05,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    labelled: tuple[torch.Tensor, torch.Tensor] | None = None,
    supervised_weight: float = 1.0,
    desc: str = "distil",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Refine ``head`` so that coarse views rank ``docs`` as the fine view does, for ``anchors``.

    ``anchors`` and ``docs`` are ``(coarse, fine)`` pairs of ``(n, hidden)`` normalised views. Each step
    draws ``batch_size`` anchors and minimises, summed over ``dims`` (each a cut of the head's output),
    ``KL(softmax(fine_a @ fine_docs.T / t) || softmax(coarse_a @ coarse_docs.T / t))`` with both coarse
    sides through the head, cut and re-normalised, exactly as :func:`adaptive_retrieval.views.view_vector`
    makes them. ``labelled``, if given, is ``(coarse states of queries (m, hidden), relevance (m, n_docs))``
    with each relevance row summing to 1: each step also draws ``batch_size // 2`` of them and adds
    ``supervised_weight`` times the cross-entropy ``-sum(relevance * log softmax(coarse_q @ coarse_docs.T
    / t))`` at the same widths. Adam, fixed ``lr``, deterministic in ``seed``. Returns the head and the
    first and last step's loss.
    """
    anchor_c, anchor_f = anchors
    doc_c, doc_f = docs
    if labelled is not None and (len(labelled[0]) != len(labelled[1]) or labelled[1].shape[1] != len(doc_c)):
        raise ValueError(
            f"labelled: {len(labelled[0])} queries and a relevance matrix of shape {tuple(labelled[1].shape)}; "
            f"it must be ({len(labelled[0])}, {len(doc_c)}), one column per document"
        )
    w = head.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    bar = tqdm(range(steps), desc=desc, leave=False)
    for _ in bar:
        rows = torch.randint(len(anchor_c), (min(batch_size, len(anchor_c)),), generator=g)
        target = F.softmax(anchor_f[rows] @ doc_f.T / temperature, dim=-1)
        doc_proj, anchor_proj = doc_c @ w, anchor_c[rows] @ w
        if labelled is not None:
            picked = torch.randint(len(labelled[0]), (max(1, batch_size // 2),), generator=g)
            query_proj, relevance = labelled[0][picked] @ w, labelled[1][picked]
        loss = torch.zeros(())
        for d in dims:
            doc_view = F.normalize(doc_proj[:, :d], dim=-1)
            logits = F.normalize(anchor_proj[:, :d], dim=-1) @ doc_view.T
            loss = loss + F.kl_div(F.log_softmax(logits / temperature, dim=-1), target, reduction="batchmean")
            if labelled is not None:
                logits = F.normalize(query_proj[:, :d], dim=-1) @ doc_view.T
                log_p = F.log_softmax(logits / temperature, dim=-1)
                loss = loss - supervised_weight * (relevance * log_p).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return w.detach(), {"distil_loss_first": losses[0], "distil_loss_last": losses[-1]} if losses else {}


def fidelity(
    coarse: np.ndarray, fine: np.ndarray, queries: np.ndarray, *, k: int = 10, candidates: int = 100
) -> float:
    """Mean share of each pseudo-query's fine top ``k`` (over the other documents) that its coarse
    shortlist of ``candidates`` holds. ``coarse``/``fine`` are the documents' view vectors; ``queries``
    are row indices of documents acting as queries (each is left out of its own ranking)."""
    n = len(fine)
    k, candidates = min(k, n - 1), min(candidates, n - 1)
    if k < 1:
        return float("nan")
    _, fine_top = _knn(fine, fine[queries], k + 1)
    _, coarse_top = _knn(coarse, coarse[queries], candidates + 1)
    shares = []
    for q, want, got in zip(queries, fine_top, coarse_top):
        want = [d for d in want if d != q][:k]
        got = {d for d in got if d != q}
        shares.append(sum(d in got for d in want) / len(want))
    return float(np.mean(shares))


def _knn(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


@dataclass
class Adaptation:
    """What :func:`adapt_head` fitted and what it measured, as the index manifest records it."""

    layer: int
    dim: int
    documents: int
    #: ``"ridge"`` when a fitted head is used, ``"kept"`` when the model's own head (or none) won
    chosen: str
    pseudo_queries: str
    candidates: int
    k: int
    ridge: float | None = None
    fidelity_before: float | None = None
    fidelity_after: float | None = None
    fidelity_by_ridge: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def adapt_head(
    student: np.ndarray,
    teacher: np.ndarray,
    *,
    layer: int,
    dim: int,
    prior: torch.Tensor | None = None,
    candidates: int = 100,
    k: int = 10,
    ridges: tuple[float, ...] = RIDGES,
    seed: int = 0,
) -> tuple[torch.Tensor | None, Adaptation]:
    """Fit the coarse head of ``layer`` to a corpus, label-free, when that beats ``prior``.

    ``student``: the documents' pooled states of ``layer`` (``(n, hidden)``, without any head);
    ``teacher``: their fine view vectors. ``prior`` is the head the model has for ``layer`` (or
    ``None``). Returns the head to use (``None``: keep ``prior``) and the record of the choice; see the
    module docstring for the procedure.
    """
    t0 = time.perf_counter()
    student = np.array(student, dtype=np.float32)  # a writable copy (the states may be memory-mapped)
    teacher = np.asarray(teacher, dtype=np.float32)
    n = len(student)
    record = Adaptation(
        layer=layer,
        dim=dim,
        documents=n,
        chosen="kept",
        pseudo_queries="held-out documents",
        candidates=candidates,
        k=k,
    )
    if n < MIN_DOCS:
        record.seconds = time.perf_counter() - t0
        logger.info("adaptation skipped: %d documents (fewer than %d to fit on)", n, MIN_DOCS)
        return None, record
    rng = np.random.default_rng(seed)
    check = np.sort(rng.choice(n, size=min(MAX_CHECK, max(1, round(n * CHECK_FRACTION))), replace=False))
    fit_rows = np.setdiff1d(np.arange(n), check)
    student_t = torch.from_numpy(student)

    def coarse_views(head: torch.Tensor | None) -> np.ndarray:
        return view_vector(student_t, dim, head).numpy()

    record.fidelity_before = fidelity(coarse_views(prior), teacher, check, k=k, candidates=candidates)
    best = (record.fidelity_before, None)
    for ridge in ridges:
        head, _ = fit_ridge_head(student[fit_rows], teacher[fit_rows], ridge)
        if head.shape[1] < dim:  # fewer fitted coordinates than the view needs
            continue
        score = fidelity(coarse_views(head), teacher, check, k=k, candidates=candidates)
        record.fidelity_by_ridge[f"{ridge:g}"] = score
        if score > best[0]:
            best = (score, ridge)
    head = None
    if best[1] is not None:
        head, record.stats = fit_ridge_head(student, teacher, best[1])
        record.chosen, record.ridge, record.fidelity_after = "ridge", best[1], best[0]
    record.seconds = time.perf_counter() - t0
    logger.info(
        "adaptation of layer %d at dim %d on %d documents: %s (pseudo-query fidelity@%d in %d: %.3f -> %.3f) "
        "in %.1f s",
        layer,
        dim,
        n,
        "fitted a ridge head" if head is not None else "kept the model's head",
        k,
        candidates,
        record.fidelity_before,
        best[0],
        record.seconds,
    )
    return head, record


def adapt_encoder(
    encoder: Any,
    coarse: Any,
    fine: Any,
    student: np.ndarray,
    teacher: np.ndarray,
    *,
    candidates: int = 100,
    seed: int = 0,
) -> tuple[Any, Adaptation]:
    """The encoder a corpus' index should use for the ``coarse`` view: ``encoder`` with the head
    :func:`adapt_head` fits for ``coarse.layer`` (a copy; ``encoder`` is left as it was), or ``encoder``
    itself when the fit does not beat its own head. ``student``: the documents' plain states of
    ``coarse.layer`` (``encoder.encode(..., apply_heads=False)`` at full width); ``teacher``: their
    ``fine`` view vectors. A coarse view on the fine view's own layer is left alone (a head there would
    change the fine view too)."""
    if coarse.layer == fine.layer:
        record = Adaptation(
            layer=coarse.layer,
            dim=coarse.dim,
            documents=len(student),
            chosen="kept",
            pseudo_queries="none: the coarse view shares the fine view's layer",
            candidates=candidates,
            k=10,
        )
        return encoder, record
    head, record = adapt_head(
        student,
        teacher,
        layer=coarse.layer,
        dim=coarse.dim,
        prior=encoder.heads.get(coarse.layer),
        candidates=candidates,
        seed=seed,
    )
    return (encoder if head is None else encoder.with_heads({coarse.layer: head})), record
