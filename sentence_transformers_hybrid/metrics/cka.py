"""Centered kernel alignment (CKA): exact, fast, float64, and honest about estimator bias.

Pure functions on feature matrices (numpy arrays or torch tensors, rows = examples); no models, no I/O. The model
helpers (:func:`~sentence_transformers_hybrid.evaluation.cka.layer_embeddings`, ``cka_matrix``, ``layerwise_cka``,
``plot_cka_heatmap``) and :class:`~sentence_transformers_hybrid.evaluation.cka.CKAEvaluator` run a forward pass and
then call these functions.

Estimators (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited"):

* biased:   ``HSIC_0 = tr(K H L H) / (n-1)^2`` with ``H = I - 11^T/n``;
* debiased: the unbiased U-statistic ``HSIC_1`` of Song et al. 2012, computed on ``K~``, ``L~`` (Grams with the
  diagonal zeroed):
  ``HSIC_1 = [tr(K~ L~) + 1^T K~ 1 * 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) * 1^T K~ L~ 1] / (n (n-3))``.

``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``. For the linear kernel ``K = X X^T`` both estimators reduce to
feature-space quantities (``d x d`` products plus per-row squared norms of the centred rows), so
:func:`linear_cka` never builds an ``n x n`` matrix: O(n d^2) time, O(d^2 + chunk x d) extra memory, float64
accumulation over row chunks whatever the input dtype.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "linear_cka",
    "gram_cka",
    "rbf_cka",
    "minibatch_cka",
    "MinibatchCKA",
    "linear_cka_matrix",
]

#: Rows per chunk in the feature-space accumulation (chunk x (d1 + d2) float64 values are live at a time).
DEFAULT_CHUNK_ROWS = 4096

#: linear_cka_matrix keeps one n x n float64 Gram per input when that is cheaper, up to this many bytes in total.
_MATRIX_GRAM_BYTES = 2 * 2**30

#: A feature matrix whose total centred variance is below this fraction of its squared mean is "constant".
_ZERO_VARIANCE_RTOL = 1e-20


# --------------------------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------------------------
class _Rows:
    """Read-only view of a 2-D numpy array or torch tensor that hands out float64 numpy row chunks."""

    def __init__(self, data: Any, name: str) -> None:
        self.name = name
        self.is_torch = type(data).__module__.startswith("torch") and hasattr(data, "detach")
        if self.is_torch:
            if data.is_complex():
                raise ValueError(f"{name} is a complex tensor; CKA needs real features")
            self.data = data.detach()
        else:
            arr = np.asarray(data)
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
                raise ValueError(f"{name} has dtype {arr.dtype}; CKA needs a real numeric matrix")
            if np.iscomplexobj(arr):
                raise ValueError(f"{name} is complex; CKA needs real features")
            self.data = arr
        shape = tuple(self.data.shape)
        if len(shape) != 2:
            raise ValueError(f"{name} must be a 2-D matrix [n examples x d features], got shape {shape}")
        self.n, self.d = int(shape[0]), int(shape[1])
        if self.d == 0:
            raise ValueError(f"{name} has no features (shape {shape})")

    def chunk(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a float64 numpy array (a view when the input is already float64 numpy)."""
        if self.is_torch:
            import torch

            return self.data[start:stop].to(device="cpu", dtype=torch.float64).numpy()
        return np.asarray(self.data[start:stop], dtype=np.float64)

    def column_sums(self, chunk_rows: int) -> np.ndarray:
        """Column sums in float64; raises ValueError naming the first non-finite entry."""
        total = np.zeros(self.d, dtype=np.float64)
        for start in range(0, self.n, chunk_rows):
            block = self.chunk(start, min(start + chunk_rows, self.n))
            s = block.sum(axis=0)
            if not np.isfinite(s).all():
                bad = np.argwhere(~np.isfinite(block))
                if len(bad):
                    r, c = (int(v) for v in bad[0])
                    raise ValueError(
                        f"{self.name} has a non-finite value ({block[r, c]}) at row {start + r}, column {c}; "
                        "CKA needs finite features"
                    )
                raise ValueError(f"{self.name}: column sums overflow float64 near row {start}; rescale the features")
            total += s
        return total


def _check_same_n(a: _Rows, b: _Rows) -> None:
    if a.n != b.n:
        raise ValueError(
            f"{a.name} has {a.n} rows but {b.name} has {b.n}; CKA compares two representations of the same "
            "examples, row i of both must be the same example"
        )


def _check_n(n: int, debiased: bool, what: str = "") -> None:
    if debiased and n < 4:
        raise ValueError(
            f"debiased CKA needs at least 4 examples{what}, got n={n}: the unbiased HSIC estimator divides by "
            "n (n - 3) (Song et al. 2012); use debiased=False or more rows"
        )
    if n < 2:
        raise ValueError(f"CKA needs at least 2 examples{what}, got n={n}: with one row there is no variance")


# --------------------------------------------------------------------------------------------------------------------
# sufficient statistics
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class _Stats:
    """Everything both estimators need, for one pair (X, Y) of centred representations.

    ``xy = ||Xc^T Yc||_F^2 = tr(Kc Lc)``; ``xx``, ``yy`` likewise; ``rx``/``ry`` are the squared norms of the
    centred rows (the diagonal of the centred Grams), reduced to ``rx.ry``, ``rx.rx``, ``ry.ry`` and their sums
    ``tx = tr(Kc)``, ``ty = tr(Lc)``.
    """

    n: int
    xy: float
    xx: float
    yy: float
    rxry: float
    rxrx: float
    ryry: float
    tx: float
    ty: float
    # squared norm of the mean row, times n (scale for the zero-variance test)
    mx: float
    my: float


def _hsic_debiased_scaled(tr_kl: float, rk_rl: float, tk_tl: float, n: int) -> float:
    """``n (n - 3) HSIC_1`` from centred-Gram quantities (the derivation is in docs/cka.md).

    With centred features ``K 1 = 0``, so ``K~ 1 = -r`` (``r`` = diagonal), ``1^T K~ 1 = -tr K``,
    ``tr(K~ L~) = tr(K L) - r_K . r_L`` and ``1^T K~ L~ 1 = r_K . r_L``; substituting in Song et al.'s formula gives
    ``tr(K L) - n / (n - 2) r_K . r_L + tr(K) tr(L) / ((n - 1)(n - 2))``.
    """
    return tr_kl - n / (n - 2.0) * rk_rl + tk_tl / ((n - 1.0) * (n - 2.0))


def _linear_stats(x: _Rows, y: _Rows, chunk_rows: int) -> _Stats:
    """Two passes over the rows: float64 column means, then centred chunk products accumulated in float64."""
    _check_same_n(x, y)
    n, d1, d2 = x.n, x.d, y.d
    if n == 0:
        raise ValueError(f"{x.name} and {y.name} have no rows")
    mu_x = x.column_sums(chunk_rows) / n
    mu_y = y.column_sums(chunk_rows) / n
    mx, my = float(n * (mu_x @ mu_x)), float(n * (mu_y @ mu_y))

    if n < d1 + d2 and n <= 8192:
        # Few examples: the n x n Grams are cheaper than the (d1 + d2)^2 feature products, and at most as large.
        xc = x.chunk(0, n) - mu_x
        yc = y.chunk(0, n) - mu_y
        k = xc @ xc.T
        del xc
        l_ = yc @ yc.T
        del yc
        rx, ry = np.diagonal(k).copy(), np.diagonal(l_).copy()
        xy = float(np.vdot(k, l_))
        xx = float(np.vdot(k, k))
        yy = float(np.vdot(l_, l_))
        return _Stats(n, xy, xx, yy, float(rx @ ry), float(rx @ rx), float(ry @ ry), float(rx.sum()),
                      float(ry.sum()), mx, my)

    s = np.zeros((d1 + d2, d1 + d2), dtype=np.float64)
    z = np.empty((min(chunk_rows, n), d1 + d2), dtype=np.float64)
    rxry = rxrx = ryry = tx = ty = 0.0
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        m = stop - start
        zc = z[:m]
        np.subtract(x.chunk(start, stop), mu_x, out=zc[:, :d1])
        np.subtract(y.chunk(start, stop), mu_y, out=zc[:, d1:])
        # One symmetric rank-k update yields Xc^T Xc, Yc^T Yc and Xc^T Yc together (numpy dispatches a.T @ a to syrk).
        s += zc.T @ zc
        rx = np.einsum("ij,ij->i", zc[:, :d1], zc[:, :d1])
        ry = np.einsum("ij,ij->i", zc[:, d1:], zc[:, d1:])
        rxry += float(rx @ ry)
        rxrx += float(rx @ rx)
        ryry += float(ry @ ry)
        tx += float(rx.sum())
        ty += float(ry.sum())
    sxx, syy, sxy = s[:d1, :d1], s[d1:, d1:], s[:d1, d1:]
    xx = float(np.vdot(sxx, sxx))
    yy = float(np.vdot(syy, syy))
    xy = float(np.vdot(sxy, sxy))
    return _Stats(n, xy, xx, yy, rxry, rxrx, ryry, tx, ty, mx, my)


def _check_variance(total_var: float, mean_sq: float, name: str) -> None:
    if not total_var > _ZERO_VARIANCE_RTOL * mean_sq:
        raise ValueError(
            f"{name} has zero variance (every row is the same vector): its centred Gram matrix is 0, so "
            "HSIC(X, X) = 0 and CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)) is 0/0, undefined"
        )


def _cka_from_stats(st: _Stats, debiased: bool, names: tuple[str, str] = ("X", "Y")) -> float:
    _check_variance(st.tx, st.mx, names[0])
    _check_variance(st.ty, st.my, names[1])
    if debiased:
        hxy = _hsic_debiased_scaled(st.xy, st.rxry, st.tx * st.ty, st.n)
        hxx = _hsic_debiased_scaled(st.xx, st.rxrx, st.tx * st.tx, st.n)
        hyy = _hsic_debiased_scaled(st.yy, st.ryry, st.ty * st.ty, st.n)
    else:
        hxy, hxx, hyy = st.xy, st.xx, st.yy
    return _ratio(hxy, hxx, hyy, debiased, names)


def _ratio(hxy: float, hxx: float, hyy: float, debiased: bool, names: tuple[str, str]) -> float:
    for h, nm in ((hxx, names[0]), (hyy, names[1])):
        if not h > 0:
            raise ValueError(
                f"the {'debiased ' if debiased else ''}HSIC of {nm} with itself is {h:.3g} (not positive), so "
                "CKA is undefined: the representation has (almost) no variance"
                + (" that the unbiased estimator can see at this n; use more rows or debiased=False" if debiased else "")
            )
    return float(hxy / math.sqrt(hxx * hyy))


# --------------------------------------------------------------------------------------------------------------------
# public estimators
# --------------------------------------------------------------------------------------------------------------------
def linear_cka(
    X: np.ndarray | torch.Tensor,
    Y: np.ndarray | torch.Tensor,
    debiased: bool = False,
    *,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> float:
    """Linear CKA between two representations of the same n examples, computed in feature space.

    Cost: O(n (d1 + d2)^2) time and O((d1 + d2)^2 + chunk_size (d1 + d2)) extra memory (or the ``n x n`` Grams when
    ``n < d1 + d2``, which is then cheaper and no larger). The input is read in row chunks and every product is
    accumulated in float64, whatever its dtype (float16/bfloat16/float32/float64, numpy or torch, CPU or GPU):
    no float64 copy of the whole input is made.

    Args:
        X: ``[n, d1]`` features (rows = examples).
        Y: ``[n, d2]`` features of the same examples in the same order.
        debiased: use the unbiased HSIC estimator (Song et al. 2012) as in Kornblith et al. 2019. The biased
            estimator is inflated for finite n (two independent random matrices with n = 1,000 rows and 384 columns
            give about 0.28, not 0); see docs/cka.md.
        chunk_size: rows per accumulation chunk.

    Returns:
        CKA as a Python float: 1 for identical representations (up to rotation and isotropic scaling), near 0 for
        unrelated ones (the debiased value can be slightly negative).

    Raises:
        ValueError: different numbers of rows, a NaN/inf entry (row and column named), fewer than 4 rows with
            ``debiased=True``, or a zero-variance input (CKA is 0/0 there).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((500, 64))
        >>> Q, _ = np.linalg.qr(rng.standard_normal((64, 64)))
        >>> round(linear_cka(X, 3.0 * X @ Q), 6)   # invariant to rotation and isotropic scaling
        1.0
        >>> abs(linear_cka(X, rng.standard_normal((500, 64)), debiased=True)) < 0.01   # unrelated: ~0
        True
        >>> round(linear_cka(X, rng.standard_normal((500, 64))), 2)   # the biased estimator is inflated
        0.12
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    x, y = _Rows(X, "X"), _Rows(Y, "Y")
    _check_same_n(x, y)
    _check_n(x.n, debiased)
    return _cka_from_stats(_linear_stats(x, y, chunk_size), debiased)


def gram_cka(K: np.ndarray | torch.Tensor, L: np.ndarray | torch.Tensor, debiased: bool = False) -> float:
    """CKA from two ``n x n`` Gram (kernel) matrices of the same examples, in float64; O(n^2) time and memory.

    Use it for any kernel; :func:`linear_cka` is the fast path for the linear kernel.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).standard_normal((50, 8))
        >>> round(gram_cka(X @ X.T, X @ X.T, debiased=True), 6)
        1.0
    """
    k = _as_gram(K, "K")
    l_ = _as_gram(L, "L")
    if k.shape != l_.shape:
        raise ValueError(f"K is {k.shape} but L is {l_.shape}; both Grams must cover the same n examples")
    n = k.shape[0]
    _check_n(n, debiased)
    if debiased:
        hxy, hxx, hyy = _gram_hsic1(k, l_), _gram_hsic1(k, k), _gram_hsic1(l_, l_)
    else:
        kc, lc = _center(k), _center(l_)
        hxy, hxx, hyy = float(np.vdot(kc, lc)), float(np.vdot(kc, kc)), float(np.vdot(lc, lc))
    return _ratio(hxy, hxx, hyy, debiased, ("K", "L"))


def _as_gram(G: Any, name: str) -> np.ndarray:
    rows = _Rows(G, name)
    if rows.n != rows.d:
        raise ValueError(f"{name} must be a square n x n Gram matrix, got shape {(rows.n, rows.d)}")
    g = rows.chunk(0, rows.n)
    if not np.isfinite(g).all():
        r, c = (int(v) for v in np.argwhere(~np.isfinite(g))[0])
        raise ValueError(f"{name} has a non-finite value at row {r}, column {c}")
    if not np.allclose(g, g.T, rtol=1e-6, atol=1e-9 * max(1.0, float(np.abs(g).max()))):
        raise ValueError(f"{name} is not symmetric; a Gram matrix K[i, j] = k(x_i, x_j) must be")
    return g


def _center(g: np.ndarray) -> np.ndarray:
    """``H G H`` with ``H = I - 11^T / n`` in O(n^2)."""
    col = g.mean(axis=0)
    return g - col[None, :] - g.mean(axis=1)[:, None] + col.mean()


def _gram_hsic1(k: np.ndarray, l_: np.ndarray) -> float:
    """``n (n - 3) HSIC_1`` (Song et al. 2012) in O(n^2): diagonals removed, then the three terms."""
    n = k.shape[0]
    kt = k.copy()
    np.fill_diagonal(kt, 0.0)
    lt = l_.copy() if l_ is not k else kt
    if l_ is not k:
        np.fill_diagonal(lt, 0.0)
    k1, l1 = kt.sum(axis=1), lt.sum(axis=1)
    return float(np.vdot(kt, lt) + k1.sum() * l1.sum() / ((n - 1.0) * (n - 2.0)) - 2.0 / (n - 2.0) * (k1 @ l1))


def _rbf_gram(x: np.ndarray, threshold: float) -> np.ndarray:
    """Kornblith et al.'s RBF Gram: bandwidth = threshold x median pairwise distance (diagonal zeros included)."""
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    med = float(np.median(d2))
    if not med > 0:
        raise ValueError(
            "the median pairwise squared distance is 0 (more than half of the pairs are identical rows), so the "
            "RBF bandwidth is undefined"
        )
    np.exp(-d2 / (2.0 * threshold**2 * med), out=d2)
    return d2


def rbf_cka(
    X: np.ndarray | torch.Tensor,
    Y: np.ndarray | torch.Tensor,
    debiased: bool = False,
    *,
    threshold: float = 1.0,
    max_n: int = 5000,
) -> float:
    """CKA with the RBF kernel (Kornblith et al. 2019): Gram-based, so for small n only.

    The bandwidth is ``threshold`` times the median pairwise Euclidean distance within each representation, as in
    Kornblith et al.'s reference code. Two ``n x n`` float64 Grams are built (plus one temporary): about
    ``24 n^2`` bytes, 600 MB at the default limit ``max_n = 5000``.

    Raises:
        ValueError: ``n > max_n`` (pass a larger ``max_n`` if you have the memory), plus everything
            :func:`linear_cka` rejects.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).standard_normal((200, 16))
        >>> round(rbf_cka(X, 2.0 * X + 1.0), 6)   # RBF CKA with a median bandwidth is scale invariant
        1.0
    """
    x, y = _Rows(X, "X"), _Rows(Y, "Y")
    _check_same_n(x, y)
    _check_n(x.n, debiased)
    if x.n > max_n:
        raise ValueError(
            f"rbf_cka builds n x n Gram matrices; n={x.n} exceeds max_n={max_n} (about {24 * x.n**2 / 1e9:.1f} GB "
            "needed). Pass max_n to allow it, subsample, or use linear_cka (feature space, any n)"
        )
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    xs, ys = x.column_sums(max(1, x.n)), y.column_sums(max(1, y.n))  # finiteness check, row and column named
    xf, yf = x.chunk(0, x.n) - xs / x.n, y.chunk(0, y.n) - ys / y.n
    _check_variance(float(np.vdot(xf, xf)), float(x.n * (xs / x.n) @ (xs / x.n)), "X")
    _check_variance(float(np.vdot(yf, yf)), float(y.n * (ys / y.n) @ (ys / y.n)), "Y")
    return gram_cka(_rbf_gram(xf, threshold), _rbf_gram(yf, threshold), debiased=debiased)


class MinibatchCKA:
    """Streaming CKA in the style of Nguyen et al. 2021 ("Do Wide and Deep Networks Learn the Same Things?").

    Each minibatch contributes its unbiased HSIC_1 (so every batch needs >= 4 rows); the result is
    ``sum HSIC_1(X_b, Y_b) / sqrt(sum HSIC_1(X_b, X_b) sum HSIC_1(Y_b, Y_b))``. Every batch term is an unbiased
    estimate of the population HSIC, so the result converges to the same value as the full-data debiased
    :func:`linear_cka` as the number of batches grows, without holding more than one batch. With a single batch it
    equals ``linear_cka(X, Y, debiased=True)`` exactly. (The estimate differs from the full-data one: it ignores
    cross-batch pairs, so it is noisier for small batches.)

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> W = rng.standard_normal((32, 32))
        >>> xs = [rng.standard_normal((256, 32)) for _ in range(40)]
        >>> acc = MinibatchCKA()
        >>> for x in xs:                       # e.g. one encoded batch at a time
        ...     acc.update(x, np.tanh(x @ W))
        >>> full = linear_cka(np.vstack(xs), np.tanh(np.vstack(xs) @ W), debiased=True)
        >>> abs(acc.compute() - full) < 0.01
        True
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.hsic_xy = 0.0
        self.hsic_xx = 0.0
        self.hsic_yy = 0.0
        self.num_batches = 0
        self.num_rows = 0

    def update(self, X: np.ndarray | torch.Tensor, Y: np.ndarray | torch.Tensor) -> None:
        """Add one minibatch of paired rows (``X[i]`` and ``Y[i]`` are the same example; >= 4 rows)."""
        x, y = _Rows(X, "X"), _Rows(Y, "Y")
        _check_same_n(x, y)
        _check_n(x.n, True, f" per minibatch (batch {self.num_batches})")
        st = _linear_stats(x, y, DEFAULT_CHUNK_ROWS)
        scale = 1.0 / (st.n * (st.n - 3.0))
        self.hsic_xy += scale * _hsic_debiased_scaled(st.xy, st.rxry, st.tx * st.ty, st.n)
        self.hsic_xx += scale * _hsic_debiased_scaled(st.xx, st.rxrx, st.tx * st.tx, st.n)
        self.hsic_yy += scale * _hsic_debiased_scaled(st.yy, st.ryry, st.ty * st.ty, st.n)
        self.num_batches += 1
        self.num_rows += st.n

    def compute(self) -> float:
        """The minibatch CKA of every batch added so far."""
        if self.num_batches == 0:
            raise ValueError("MinibatchCKA.compute() called before any update()")
        return _ratio(self.hsic_xy, self.hsic_xx, self.hsic_yy, True, ("X", "Y"))


def minibatch_cka(
    X: np.ndarray | torch.Tensor | Iterable[tuple[Any, Any]],
    Y: np.ndarray | torch.Tensor | None = None,
    batch_size: int = 1024,
) -> float:
    """Minibatch CKA (Nguyen et al. 2021) over contiguous row batches of X and Y, or over an iterable of pairs.

    ``minibatch_cka(X, Y, batch_size)`` splits the rows in order (a trailing batch of fewer than 4 rows joins the
    previous one, so no row is dropped); ``minibatch_cka(pairs)`` consumes ``(X_batch, Y_batch)`` pairs from any
    iterable (e.g. a generator that encodes a stream). See :class:`MinibatchCKA`.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).standard_normal((4000, 16))
        >>> abs(minibatch_cka(X, X[:, ::-1], batch_size=500) - 1.0) < 1e-12
        True
    """
    acc = MinibatchCKA()
    if Y is None:
        for i, pair in enumerate(X):  # type: ignore[arg-type]
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"minibatch_cka(pairs): item {i} is not an (X_batch, Y_batch) pair")
            acc.update(pair[0], pair[1])
        return acc.compute()
    if batch_size < 4:
        raise ValueError(f"batch_size must be >= 4 (the unbiased HSIC needs 4 rows), got {batch_size}")
    x, y = _Rows(X, "X"), _Rows(Y, "Y")
    _check_same_n(x, y)
    _check_n(x.n, True)
    starts = list(range(0, x.n, batch_size))
    if len(starts) > 1 and x.n - starts[-1] < 4:
        starts.pop()
    bounds = starts[1:] + [x.n]
    for start, stop in zip(starts, bounds):
        acc.update(x.data[start:stop], y.data[start:stop])
    return acc.compute()


# --------------------------------------------------------------------------------------------------------------------
# many representations at once
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class _Centred:
    """A centred float64 copy of one representation, with what the estimators need about it."""

    z: np.ndarray  # [n, d] centred float64, or None after the Gram was taken
    r: np.ndarray  # squared norms of the centred rows
    t: float  # trace of the centred Gram
    self_xy: float  # tr(Kc Kc)
    gram: np.ndarray | None = None


def _centred(data: Any, name: str, gram_out: np.ndarray | None = None) -> _Centred:
    """Centre one input; with ``gram_out`` (an ``n x n`` float64 buffer) its centred Gram is written there."""
    rows = _Rows(data, name)
    n = rows.n
    mu = rows.column_sums(max(1, n)) / n
    z = rows.chunk(0, n) - mu
    r = np.einsum("ij,ij->i", z, z)
    _check_variance(float(r.sum()), float(n * (mu @ mu)), name)
    if gram_out is not None:
        np.matmul(z, z.T, out=gram_out)
        return _Centred(None, r, float(r.sum()), float(np.vdot(gram_out, gram_out)), gram_out)  # type: ignore[arg-type]
    s = z.T @ z
    return _Centred(z, r, float(r.sum()), float(np.vdot(s, s)))


def linear_cka_matrix(
    Xs: Sequence[np.ndarray | torch.Tensor],
    Ys: Sequence[np.ndarray | torch.Tensor] | None = None,
    debiased: bool = False,
    *,
    names: tuple[Sequence[str], Sequence[str]] | None = None,
) -> np.ndarray:
    """Linear CKA between every ``Xs[i]`` and every ``Ys[j]`` (default ``Ys = Xs``): an ``[len(Xs), len(Ys)]`` matrix.

    All matrices must have the same rows (examples). Each representation is centred and its self-similarity computed
    once; a cross term then costs one ``d_i x d_j`` product (or an ``n x n`` Gram inner product when ``n`` is smaller
    than the feature dimension). Unlike :func:`linear_cka` this keeps a centred float64 copy of every input
    (``8 n sum(d)`` bytes) because each one is reused many times. Entries equal ``linear_cka(Xs[i], Ys[j])``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> A = rng.standard_normal((300, 16))
        >>> np.round(linear_cka_matrix([A, 2 * A, rng.standard_normal((300, 16))], debiased=True), 1)
        array([[ 1.,  1., -0.],
               [ 1.,  1., -0.],
               [-0., -0.,  1.]])
    """
    symmetric = Ys is None
    ys_in = Xs if Ys is None else Ys
    if len(Xs) == 0 or len(ys_in) == 0:
        raise ValueError("linear_cka_matrix needs at least one representation on each side")
    names_x = list(names[0]) if names else [f"Xs[{i}]" for i in range(len(Xs))]
    names_y = list(names[1]) if names else [f"Ys[{j}]" for j in range(len(ys_in))]
    if symmetric:
        names_y = names_x
    shapes = [tuple(a.shape) for a in list(Xs) + list(ys_in)]
    n = shapes[0][0]
    for nm, shp in zip(names_x + names_y, shapes):
        if len(shp) != 2:
            raise ValueError(f"{nm} must be 2-D [n x d], got shape {shp}")
        if shp[0] != n:
            raise ValueError(f"{nm} has {shp[0]} rows but {names_x[0]} has {n}; all inputs must cover the same examples")
    _check_n(n, debiased)
    # Cross terms cost n d_i d_j each in feature space; via centred Grams they cost n^2 each after one n^2 d_i
    # product per input. Take the Grams when that is cheaper and they fit in _MATRIX_GRAM_BYTES.
    dx, dy = [s[1] for s in shapes[: len(Xs)]], [s[1] for s in shapes[len(Xs) :]]
    n_inputs = len(Xs) if symmetric else len(Xs) + len(ys_in)
    feature_cost = float(sum(dx)) * float(sum(dy)) * n
    gram_cost = float(sum(dx) + (0 if symmetric else sum(dy))) * n * n / 2 + len(Xs) * len(ys_in) * float(n) * n
    use_gram = gram_cost < feature_cost and n_inputs * n * n * 8 <= _MATRIX_GRAM_BYTES
    ga = np.empty((len(Xs), n, n)) if use_gram else None
    gb = ga if symmetric or not use_gram else np.empty((len(ys_in), n, n))
    cx = [_centred(a, nm, None if ga is None else ga[i]) for i, (a, nm) in enumerate(zip(Xs, names_x))]
    cy = cx if symmetric else [_centred(b, nm, None if gb is None else gb[j]) for j, (b, nm) in enumerate(zip(ys_in, names_y))]

    def hsic(a: _Centred, b: _Centred, cross: float) -> float:
        if not debiased:
            return cross
        return _hsic_debiased_scaled(cross, float(a.r @ b.r), a.t * b.t, n)

    self_x = [hsic(a, a, a.self_xy) for a in cx]
    self_y = self_x if symmetric else [hsic(b, b, b.self_xy) for b in cy]
    out = np.empty((len(cx), len(cy)), dtype=np.float64)
    if use_gram:  # every tr(K_i L_j) in one product of the flattened Grams
        all_crosses = ga.reshape(len(cx), -1) @ gb.reshape(len(cy), -1).T  # type: ignore[union-attr]
    else:
        zb = np.concatenate([b.z for b in cy], axis=1)
        offs = np.cumsum([0] + [b.z.shape[1] for b in cy])
    for i, a in enumerate(cx):
        if use_gram:
            crosses = all_crosses[i].tolist()
        else:
            p = a.z.T @ zb
            crosses = [float(np.vdot(p[:, offs[j] : offs[j + 1]], p[:, offs[j] : offs[j + 1]])) for j in range(len(cy))]
        for j, b in enumerate(cy):
            if symmetric and j < i:
                out[i, j] = out[j, i]
                continue
            out[i, j] = _ratio(hsic(a, b, crosses[j]), self_x[i], self_y[j], debiased, (names_x[i], names_y[j]))
    return out
