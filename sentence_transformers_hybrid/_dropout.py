"""A cheaper dropout mask for the training loss: 32-bit uniforms cut from 64-bit random draws.

On a CPU ``torch.nn.functional.dropout`` spends nearly all its time drawing the mask (``aten::bernoulli_``, ~10 ns
an element with two threads; on LAReQA batches ~10-13 % of a float32 training step, ``benchmarks/bench_finetune.py
--profile``), not in the multiplication. :func:`bits_dropout` draws one 64-bit integer per two elements
(``Tensor.random_``, the default generator, so a seeded run repeats) and reads each half as a uniform 32-bit
integer: an element is kept when it is at least ``round(p * 2**32)``, i.e. with probability ``1 - p`` up to
``2**-33`` (finer than the float32 uniforms ``bernoulli_`` compares, ``2**-24``), and kept elements are scaled by
``1 / (1 - p)`` as in ``F.dropout``. Same distribution, another random stream: the numbers of a run change as with
another dropout seed, so it is an option (``hybrid_loss(..., fast_dropout=True)``), off by default.

:func:`fast_dropout_active` puts it in place of ``torch.nn.functional.dropout`` (which ``nn.Dropout`` and the
eager attention functions call) inside a block: the loss uses it around its forward only.

Example::

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> x = torch.ones(200_000)
    >>> y = bits_dropout(x, p=0.1)
    >>> round(float((y == 0).float().mean()), 2), sorted({round(float(v), 4) for v in y.unique()})
    (0.1, [0.0, 1.1111])
    >>> torch.equal(bits_dropout(x, p=0.1, training=False), x)
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["bits_dropout", "fast_dropout_active"]

_TWO_32 = 2**32


def bits_dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """``torch.nn.functional.dropout`` with its mask from 32-bit halves of 64-bit random draws (see the module)."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input.mul_(0.0) if inplace else input * 0.0
    n = input.numel()
    draws = torch.empty((n + 1) // 2, dtype=torch.int64, device=input.device).random_(-(2**63), 2**63 - 1)
    uniform = draws.view(torch.int32)[:n].view(input.shape)  # each half uniform over the 2**32 int32 values
    keep = uniform >= round(p * _TWO_32) - 2**31
    mask = keep.to(input.dtype).mul_(1.0 / (1.0 - p))
    return input.mul_(mask) if inplace else input * mask


@contextlib.contextmanager
def fast_dropout_active(enabled: bool = True) -> Iterator[None]:
    """``torch.nn.functional.dropout`` is :func:`bits_dropout` inside this block (when ``enabled``)."""
    if not enabled:
        yield
        return
    functional = torch.nn.functional
    before = functional.dropout
    functional.dropout = bits_dropout
    try:
        yield
    finally:
        functional.dropout = before
