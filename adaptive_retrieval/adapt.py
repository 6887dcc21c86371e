"""Fitting a coarse head to the corpus being indexed, without labels.

One forward pass per document gives both the coarse layer's pooled states (the *student*: those of
layers ``1 .. layer``, all computed on the way) and the fine view (the *teacher*). A linear head maps the
first onto the coordinates of the second, so that the coarse view ``(layer, dim)`` (the head's output
cut to ``dim`` and normalised, as :func:`adaptive_retrieval.views.view_vector` makes every view) ranks
the corpus as the fine view does. A head fitted here is *stacked* (see
:meth:`adaptive_retrieval.Encoder.set_head`): it reads the normalised pooled states of every layer up to
the coarse one side by side, which costs no extra layer and recovers more of the fine view than the
coarse layer's state alone (docs/measurements.md).

:func:`fit_ridge_head` is the closed-form fit: ridge regression of the fine view's coordinates on its
own singular vectors (largest first), so that cutting the head's output to ``dim`` keeps the best
rank-``dim`` approximation of the fine view's inner products a linear map of the student can give.
The directions themselves are kept (:attr:`Adaptation.projection`): an index built with the head holds
each document's fine vector projected on them (exact), searched by a query's fine vector projected the
same way or by the head's prediction from its early layers; :func:`adapt_head` scores a fitted head so.

:func:`distil_head` refines a head by ranking distillation (the fine view's similarity distribution over
the documents, for query-like anchors, copied by the coarse view at several widths), optionally with a
relevance term on labelled queries; ``training/fit_coarse_head.py`` uses both to make shipped heads.

:func:`adapt_head` decides, label-free, whether and how to use it on a corpus: it holds some of the
corpus' documents out of the fit and asks *pseudo-queries* made from them (by default
:func:`pseudo_query`: a document's first sentence, cut to ``SPAN_WORDS`` words, which is shorter and more
query-like than the whole document) for their fine top ``k`` over the corpus; each fit's *fidelity* is
the share of that top ``k`` its coarse shortlist of ``candidates`` holds, measured against the head the
model already has (or none). The best fit is refitted on every document and returned only when it beats
that baseline; otherwise the model's own head stays. So a small corpus, on which a fit cannot
generalise, is never made worse than the model as shipped.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import InvalidArgument, InvalidArgumentType
from .views import View, stack_pooled, view_vector

logger = logging.getLogger(__name__)

RIDGES: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
"""Ridge strengths tried, as fractions of the mean diagonal of the student's Gram matrix."""
SPAN_WORDS = 16
"""A pseudo-query is a held-out document's first sentence, cut to at most this many words."""
MAX_FIT_SPANS = 2000
"""Spans of documents that are not held out are fitted on too (query-like rows), at most this many, and
all spans' tokens at most this share of the documents' (so encoding them stays a small part of the build)."""
SPAN_BUDGET = 0.1
MIN_DOCS = 50
"""Fewer documents than this: nothing is fitted (too few to hold any out and learn from the rest)."""
MAX_CHECK = 500
"""Pseudo-queries held out of the fit, at most; the fraction of the documents otherwise."""
CHECK_FRACTION = 0.2


def fit_ridge_head(
    student: np.ndarray | torch.Tensor,
    teacher: np.ndarray | torch.Tensor,
    ridge: float = 1e-2,
    basis_rows: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Ridge regression ``student @ W ~ teacher @ V`` (``V``: the teacher's right singular vectors, by
    singular value).

    ``student`` is ``(n, width)`` (a coarse layer's pooled states, or a stacked head's input; normalised
    or not: a head is linear and the view is normalised after it), ``teacher`` ``(n, fine_dim)``, row for
    row the same texts. ``ridge`` is the regularisation as a fraction of the mean diagonal of
    ``student.T @ student``. ``V`` comes from the first ``basis_rows`` rows of ``teacher`` (default
    all). Returns the head ``W``, float32 ``(width, min(fine_dim, n))``, and fit statistics.
    """
    return fit_ridge_heads(student, teacher, (ridge,), basis_rows)[0]


def fine_basis(
    teacher: np.ndarray | torch.Tensor, rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The singular values and right singular vectors (``(r, fine_dim)``, largest first) of the
    teacher's first ``rows`` rows (default all), float64: the coordinates a fitted head predicts."""
    f = torch.as_tensor(np.asarray(teacher), dtype=torch.float64)
    _, s, vh = torch.linalg.svd(f[:rows], full_matrices=False)
    return s, vh


def fit_ridge_heads(
    student: np.ndarray | torch.Tensor,
    teacher: np.ndarray | torch.Tensor,
    ridges: Sequence[float],
    basis_rows: int | None = None,
    *,
    basis: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[tuple[torch.Tensor, dict[str, float]]]:
    """:func:`fit_ridge_head` at each of ``ridges``, sharing the one Gram matrix and SVD (``basis``:
    :func:`fine_basis` computed already)."""
    x = torch.as_tensor(np.asarray(student), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(teacher), dtype=torch.float64)
    if x.ndim != 2 or f.ndim != 2 or len(x) != len(f) or len(x) == 0:
        raise InvalidArgument(
            f"student and teacher must be 2-D with the same rows, got {tuple(x.shape)} and {tuple(f.shape)}"
        )
    for ridge in ridges:
        if not ridge > 0:
            raise InvalidArgument(f"ridge must be > 0, got {ridge!r}")
    s, vh = fine_basis(f, basis_rows) if basis is None else basis
    target = f @ vh.T  # coordinates on the singular vectors, largest first
    n, width = x.shape
    dual = n < width  # fewer rows than features: solve the n x n system (same solution, cheaper)
    x32 = x.float()
    gram = (x32 @ x32.T if dual else x32.T @ x32).double()  # float32 products: the bulk of the time
    scale = float((x**2).sum()) / width  # the mean diagonal of x.T @ x
    moment = None if dual else (x32.T @ target.float()).double()
    energy = (s**2).cumsum(0) / (s**2).sum()
    fits = []
    for ridge in ridges:
        lam = ridge * scale
        # symmetric positive definite: Cholesky, about twice as fast as a general solve
        factor = torch.linalg.cholesky(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype))
        if dual:
            w = (x32.T @ torch.cholesky_solve(target, factor).float()).double()
        else:
            w = torch.cholesky_solve(moment, factor)
        residual = float(((x32 @ w.float() - target.float()) ** 2).sum() / (target**2).sum())
        stats = {
            "relative_residual": residual,
            "lambda": lam,
            **{f"fine_energy_in_top_{d}": float(energy[d - 1]) for d in (32, 64, 128, 256) if d <= len(s)},
        }
        fits.append((w.float(), stats))
    return fits


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
        raise InvalidArgument(
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
    coarse: np.ndarray,
    fine: np.ndarray,
    queries: tuple[np.ndarray, np.ndarray],
    *,
    exclude: np.ndarray | None = None,
    k: int = 10,
    candidates: int = 100,
) -> float:
    """Mean share of each query's fine top ``k`` over the documents that its coarse shortlist of
    ``candidates`` holds (``overlap``, label-free). ``coarse``/``fine`` are the documents' view vectors,
    ``queries`` the queries' ``(coarse, fine)`` view vectors. ``exclude``, if given, holds for each query
    a document row left out of its ranking (a document acting as its own query)."""
    n = len(fine)
    spare = 0 if exclude is None else 1
    k, candidates = min(k, n - spare), min(candidates, n - spare)
    if k < 1:
        return float("nan")
    _, fine_top = _knn(fine, queries[1], k + spare)
    _, coarse_top = _knn(coarse, queries[0], candidates + spare)
    skip = np.full(len(fine_top), -1) if exclude is None else np.asarray(exclude)
    shares = []
    for q, want, got in zip(skip, fine_top, coarse_top):
        want = [d for d in want if d != q][:k]
        got = {d for d in got if d != q}
        shares.append(sum(d in got for d in want) / len(want))
    return float(np.mean(shares))


def pseudo_query(text: str, words: int = SPAN_WORDS) -> str:
    """A query-like span of a document: its first sentence, cut to at most ``words`` words."""
    first = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]
    return " ".join(first.split()[:words])


def project_fine(fine: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Fine view vectors ``(n, fine_dim)`` projected on ``projection`` (``(fine_dim, dim)``, e.g.
    :attr:`Adaptation.projection`) and normalised: the coarse vectors of an adapted index (its documents,
    and its ``"projected"`` queries). The one definition; :meth:`adaptive_retrieval.Retriever.project` applies it."""
    x = np.asarray(fine, dtype=np.float32) @ np.asarray(projection, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_rows(n: int, seed: int = 0) -> np.ndarray:
    """The documents :func:`adapt_head` holds out of the fit to make pseudo-queries from: a seeded
    ``CHECK_FRACTION`` of ``n``, at most ``MAX_CHECK``, sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(MAX_CHECK, max(1, round(n * CHECK_FRACTION))), replace=False))


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
    chosen: str
    """``"ridge"`` when a fitted head is used, ``"kept"`` when the model's own head (or none) won"""
    pseudo_queries: str
    candidates: int
    k: int
    head_layers: list[int] = field(default_factory=list)
    """The layers whose pooled states the fitted head reads (``1 .. layer``: stacked; set by adapt_encoder)"""
    ridge: float | None = None
    fidelity_before: float | None = None
    fidelity_after: float | None = None
    fidelity_by_ridge: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    """The whole adaptation's time (with :func:`adapt_encoder`: the pseudo-queries' encoding included)"""
    stats: dict[str, float] = field(default_factory=dict)
    projection: np.ndarray | None = field(default=None, repr=False, compare=False)
    """``(fine_dim, dim)``: the fine view's directions whose coordinates the fitted head predicts, first
    ``dim``; ``fine_query @ projection``, normalised, is a query's coarse vector computed from its fine
    view (the ``"projected"`` coarse query of :meth:`adaptive_retrieval.Retriever.search`). Saved beside
    the manifest."""
    directions: np.ndarray | None = field(default=None, repr=False, compare=False)
    """``(r, fine_dim)``: every direction the fit found, largest first (``projection`` is the first ``dim``,
    transposed); for :func:`adaptive_retrieval.first_stage.choose`, not saved"""
    pseudo_fine: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The pseudo-queries' fine vectors (with texts), for :func:`adaptive_retrieval.first_stage.choose`; not saved"""

    def as_dict(self) -> dict[str, Any]:
        """The record as the manifest holds it (the projection matrix is saved as a file)."""
        unsaved = ("projection", "directions", "pseudo_fine")
        return {k: v for k, v in asdict(self).items() if k not in unsaved}


def check_adaptation(adaptation: Any, coarse: Any, fine: Any) -> Adaptation | None:
    """``adaptation`` (or ``None``) if it was fitted for these views, else refused.

    Raises:
        InvalidArgumentType: not an :class:`Adaptation`.
        InvalidArgument: fitted for another coarse view, or a projection of the wrong shape.
    """
    if adaptation is None:
        return None
    if not isinstance(adaptation, Adaptation):
        raise InvalidArgumentType(f"adaptation must be an Adaptation, got {type(adaptation).__name__}")
    if (adaptation.layer, adaptation.dim) != coarse.as_tuple():
        raise InvalidArgument(
            f"adaptation was fitted for the coarse view ({adaptation.layer}, {adaptation.dim}), not {coarse}"
        )
    p = adaptation.projection
    if p is not None and p.shape != (fine.dim, coarse.dim):
        raise InvalidArgument(f"adaptation.projection is {p.shape}, the views need {(fine.dim, coarse.dim)}")
    return adaptation


def adapt_head(
    student: np.ndarray,
    teacher: np.ndarray,
    *,
    layer: int,
    dim: int,
    prior: torch.Tensor | None = None,
    queries: tuple[np.ndarray, np.ndarray] | None = None,
    check: np.ndarray | None = None,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    candidates: int = 100,
    k: int = 10,
    ridges: tuple[float, ...] = RIDGES,
    seed: int = 0,
) -> tuple[torch.Tensor | None, Adaptation]:
    """Fit the coarse head of ``layer`` to a corpus, label-free, when that beats ``prior``.

    ``student``: what the fitted head will read for each document, ``(n, width)`` without any head: the
    layer's pooled state (``width`` = hidden) or, stacked, the normalised pooled states of layers
    ``1 .. layer`` side by side (``width`` = ``layer * hidden``; :meth:`adaptive_retrieval.Encoder.head_input`).
    ``teacher``: the documents' fine view vectors. ``prior`` is the head the model has for ``layer``
    (or ``None``); a ``(hidden, out)`` prior reads the last ``hidden`` columns of a stacked student.
    ``check``: the documents held out of the fit (default :func:`check_rows`); ``queries``: the
    pseudo-queries made from them, ``(student, fine view)`` rows as for the documents (default: the
    held-out documents themselves, each left out of its own ranking). ``extra``: more ``(student,
    teacher)`` rows to fit on (query-like spans of documents that are not held out). Returns the head to use
    (``None``: keep ``prior``) and the record of the choice; see the module docstring.
    """
    t0 = time.perf_counter()
    student = np.array(student, dtype=np.float32)  # a writable copy (the states may be memory-mapped)
    teacher = np.asarray(teacher, dtype=np.float32)
    n, width = student.shape
    record = Adaptation(
        layer=layer,
        dim=dim,
        documents=n,
        chosen="kept",
        pseudo_queries="held-out documents" if queries is None else "spans of held-out documents",
        candidates=candidates,
        k=k,
    )
    if n < MIN_DOCS:
        record.seconds = time.perf_counter() - t0
        logger.info("adaptation skipped: %d documents (fewer than %d to fit on)", n, MIN_DOCS)
        return None, record
    check = check_rows(n, seed) if check is None else np.asarray(check)
    if queries is not None and (len(queries[0]) != len(check) or queries[0].shape[1] != width):
        raise InvalidArgument(
            f"queries: {tuple(queries[0].shape)} student rows for {len(check)} held-out documents of "
            f"width {width}; give one row per held-out document"
        )
    fit_rows = np.setdiff1d(np.arange(n), check)
    extra_student, extra_teacher = (
        (np.zeros((0, width), np.float32), np.zeros((0, teacher.shape[1]), np.float32))
        if extra is None
        else (np.asarray(extra[0], np.float32), np.asarray(extra[1], np.float32))
    )

    def score(head: torch.Tensor | None, directions: torch.Tensor | None = None) -> float:
        """Pseudo-query fidelity of ``head``; with ``directions`` (the fitted head's basis), the
        documents' coarse vectors are their fine views projected on it, as the index will hold them."""

        def view(x: np.ndarray) -> np.ndarray:
            if head is not None and head.shape[0] != x.shape[1]:
                x = x[:, -head.shape[0] :]  # a head of the layer alone reads its own (last) block
            return view_vector(torch.from_numpy(np.ascontiguousarray(x)), dim, head).numpy()

        if directions is None:
            docs = view(student)
        else:
            docs = project_fine(teacher, directions[:dim].T.float().numpy())
        if queries is None:
            return fidelity(
                docs, teacher, (docs[check], teacher[check]), exclude=check, k=k, candidates=candidates
            )
        q_student, q_fine = queries
        return fidelity(
            docs, teacher, (view(np.asarray(q_student, np.float32)), q_fine), k=k, candidates=candidates
        )

    record.fidelity_before = score(prior)
    best = (record.fidelity_before, None)
    fit_basis = fine_basis(teacher[fit_rows])  # the fine view's directions of the corpus itself
    fits = fit_ridge_heads(
        np.concatenate([student[fit_rows], extra_student]),
        np.concatenate([teacher[fit_rows], extra_teacher]),
        ridges,
        basis=fit_basis,
    )
    for ridge, (head, _) in zip(ridges, fits):
        if head.shape[1] < dim:  # fewer fitted coordinates than the view needs
            continue
        record.fidelity_by_ridge[f"{ridge:g}"] = fitted = score(head, fit_basis[1])
        if fitted > best[0]:
            best = (fitted, ridge)
    head = None
    if best[1] is not None:
        basis = fine_basis(teacher)
        ((head, record.stats),) = fit_ridge_heads(
            np.concatenate([student, extra_student]),
            np.concatenate([teacher, extra_teacher]),
            (best[1],),
            basis=basis,
        )
        record.chosen, record.ridge, record.fidelity_after = "ridge", best[1], best[0]
        # the head predicts the fine view's coordinates on these directions: a fine query vector
        # projected on the first ``dim`` of them lands in the coarse view's space
        record.projection = np.ascontiguousarray(basis[1][:dim].T, dtype=np.float32)
        record.directions = basis[1].float().numpy()
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
    states: Sequence[np.ndarray],
    teacher: np.ndarray,
    *,
    texts: Sequence[str] | None = None,
    candidates: int = 100,
    seed: int = 0,
    batch_size: int | None = None,
    show_progress: bool | None = None,
) -> tuple[Any, Adaptation]:
    """The encoder a corpus' index should use for the ``coarse`` view: ``encoder`` with the stacked head
    :func:`adapt_head` fits for ``coarse.layer`` (a copy; ``encoder`` is left as it was), or ``encoder``
    itself when the fit does not beat its own head.

    ``states``: the documents' plain pooled states of layers ``1 .. coarse.layer`` (``states[i]`` is
    layer ``i + 1``, ``(n, hidden)`` each, e.g. ``encoder.encode(..., apply_heads=False)`` at full
    width); ``teacher``: their ``fine`` view vectors. ``texts``, the documents' texts, give the
    pseudo-queries (:func:`pseudo_query` of each held-out document, encoded here; one that is the whole
    document reuses its states), and the spans of up to ``MAX_FIT_SPANS`` other documents are fitted on
    beside the documents; without ``texts`` the held-out documents are their own pseudo-queries. A
    coarse view on the fine view's own layer is left alone (a head there would change the fine view too).
    """
    t0 = time.perf_counter()
    layer = coarse.layer
    if layer == fine.layer:
        record = Adaptation(
            layer=layer,
            dim=coarse.dim,
            documents=len(teacher),
            chosen="kept",
            pseudo_queries="none: the coarse view shares the fine view's layer",
            candidates=candidates,
            k=10,
        )
        return encoder, record
    if len(states) < layer:
        raise InvalidArgument(f"states holds {len(states)} layers; the coarse view needs layers 1..{layer}")
    n = len(teacher)
    student = stack_layers([np.asarray(states[i], dtype=np.float32) for i in range(layer)])
    queries, check, extra, encoded_spans = None, None, None, 0
    if texts is not None and n >= MIN_DOCS:
        if len(texts) != n:
            raise InvalidArgument(f"texts: {len(texts)} for {n} documents")
        check = check_rows(n, seed)
        rows, spans = span_rows(texts, check, seed, lambda xs: [len(t) for t in encoder.tokenize(xs)])
        views = [View(i + 1, encoder.hidden_size) for i in range(layer)] + [
            View(fine.layer, encoder.hidden_size)
        ]
        span_student, span_teacher = student[rows].copy(), np.array(teacher[rows], dtype=np.float32)
        fresh = [j for j, (i, span) in enumerate(zip(rows, spans)) if span and span != texts[i].strip()]
        if fresh:
            encoded = encoder.encode(
                encoder.as_queries([spans[j] for j in fresh]),  # query-like: encoded as queries are
                views,
                batch_size=batch_size,
                show_progress=show_progress,
                apply_heads=False,
                desc="fitting the coarse head (pseudo-queries)",
            )
            span_student[fresh] = stack_layers([encoded[v] for v in views[:layer]])
            span_teacher[fresh] = encoder.project(torch.from_numpy(encoded[views[-1]]), fine).numpy()
        encoded_spans = len(fresh)
        queries = (span_student[: len(check)], span_teacher[: len(check)])
        is_span = np.zeros(len(rows), dtype=bool)
        is_span[fresh] = True
        is_span[: len(check)] = False  # the held-out ones are the pseudo-queries, never fitted on
        if is_span.any():  # a span that is its whole document would only repeat the document's row
            extra = (span_student[is_span], span_teacher[is_span])
    head, record = adapt_head(
        student,
        teacher,
        layer=layer,
        dim=coarse.dim,
        prior=encoder.heads.get(layer),
        queries=queries,
        check=check,
        extra=extra,
        candidates=candidates,
        seed=seed,
    )
    record.seconds = time.perf_counter() - t0  # the whole adaptation: spans encoded, fits, checks
    if head is not None:
        record.head_layers = list(range(1, layer + 1))
    if queries is not None:
        record.pseudo_fine = queries[1]
        record.pseudo_queries = (
            f"first sentences (at most {SPAN_WORDS} words) of {len(check)} held-out documents; "
            f"{0 if extra is None else len(extra[0])} more of other documents fitted on beside them "
            f"({encoded_spans} spans encoded in all; a span that is its whole document reuses it)"
        )
    return (encoder if head is None else encoder.with_heads({layer: head})), record


def span_rows(
    texts: Sequence[str],
    check: np.ndarray,
    seed: int,
    count: Callable[[list[str]], list[int]] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The documents whose :func:`pseudo_query` spans :func:`adapt_encoder` encodes: the held-out ones
    (first, as the pseudo-queries), then others in a seeded order, to fit on, at most ``MAX_FIT_SPANS``,
    while every span's length stays within ``SPAN_BUDGET`` of the documents' (lengths by ``count``,
    e.g. token counts; default words), so that encoding them stays a small part of the build."""
    count = count or (lambda xs: [len(x.split()) for x in xs])
    others = np.random.default_rng(seed + 1).permutation(np.setdiff1d(np.arange(len(texts)), check))
    rows, spans = list(check), [pseudo_query(texts[i]) for i in check]
    budget = SPAN_BUDGET * sum(count(list(texts))) - sum(count(spans))
    candidates = [(i, pseudo_query(texts[i])) for i in others[:MAX_FIT_SPANS]]
    candidates = [(i, span) for i, span in candidates if span != texts[i].strip()]  # else nothing new
    lengths = count([span for _, span in candidates]) if candidates else []  # none: one-sentence documents
    for (i, span), length in zip(candidates, lengths):
        budget -= length
        if budget < 0:
            break
        rows.append(i)
        spans.append(span)
    return np.asarray(rows, dtype=np.int64), spans


def stack_layers(states: Sequence[np.ndarray]) -> np.ndarray:
    """Pooled states of layers ``1 .. L`` as a stacked head reads them
    (:func:`adaptive_retrieval.views.stack_pooled`), for NumPy arrays."""
    return stack_pooled([torch.from_numpy(np.asarray(s, dtype=np.float32)) for s in states]).numpy()
