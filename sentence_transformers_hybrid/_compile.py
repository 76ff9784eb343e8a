"""``torch.compile`` of a transformer's encoder layers, for the training loss and the encoding passes.

What is compiled is one encoder layer's call (``BertLayer`` and the like): every layer of the stack runs the same
code on its own weights, so inductor builds one graph (forward and backward, with fused element-wise kernels and
its own dropout random numbers) per input shape and reuses it for all layers; the compile time does not grow with
the depth. The layers are compiled only inside :meth:`CompiledLayers.active` (the loss's forward, an encoding
pass): outside it the model is the ordinary eager one, so evaluation, saving and other callers see no change.

Each new input shape is a new graph (``dynamic=False``: a dynamic-shape graph was measured to gain little), so the
callers round their widths up to a few buckets (:func:`bucket_width`) and keep their row counts fixed; the shapes
seen are counted (:attr:`CompiledLayers.shapes`) so that a recompilation storm shows in the benchmark and the run
record. Without a working compiler (inductor needs a C++ compiler on CPUs) the first use warns, names the error
and the compiler, and the layers stay eager: the caller's path is then the uncompiled one, and
:meth:`CompiledLayers.describe` says so.

Example::

    >>> bucket_width(17), bucket_width(100), bucket_width(128), bucket_width(300), bucket_width(100, limit=110)
    (32, 128, 128, 320, 110)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["WIDTH_BUCKETS", "CompiledLayers", "bucket_width", "compiler_problem", "encode_bucketed", "encoder_layers",
           "in_text_order", "inverse_permutation"]

#: the widths (tokens) a compiled chunk is padded up to; past the last, multiples of 64
WIDTH_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256)


def bucket_width(width: int, buckets: tuple[int, ...] = WIDTH_BUCKETS, limit: int | None = None) -> int:
    """The smallest bucket that holds ``width`` tokens (past the last bucket: ``width`` rounded up to 64), at most
    ``limit`` (a model's ``max_seq_length``: no position past what the model was asked to take) when that holds
    ``width``."""
    for b in buckets:
        if width <= b:
            break
    else:
        b = -(-width // 64) * 64
    return min(b, limit) if limit is not None and limit >= width else b


def encoder_layers(model: Any) -> list[torch.nn.Module]:
    """The repeated layers of a ``SentenceTransformer``'s (or a Hugging Face model's) encoder, or ``[]``.

    BERT, XLM-R, E5 and their kin keep them in ``encoder.layer``; other families in ``layers`` / ``encoder.layers``.
    """
    auto = getattr(model[0], "auto_model", None) if _indexable(model) else model
    if auto is None:
        return []
    for path in ("encoder.layer", "encoder.layers", "layers", "model.layers"):
        obj = auto
        for name in path.split("."):
            obj = getattr(obj, name, None)
        if isinstance(obj, torch.nn.ModuleList) and len(obj) and len({type(m) for m in obj}) == 1:
            return list(obj)
    return []


def _indexable(model: Any) -> bool:
    try:
        model[0]
    except (TypeError, IndexError, KeyError, NotImplementedError):
        return False
    return True


@functools.lru_cache(maxsize=None)
def compiler_problem(device_type: str = "cpu") -> str | None:
    """Why ``torch.compile`` (inductor) cannot be used on ``device_type`` here, or ``None`` when it works.

    Checked once per process by compiling a two-op function and its backward (a few seconds: one C++ build).
    """
    try:  # with gradients and without autocast whatever the caller's context (an encoding pass runs in no_grad)
        fn = torch.compile(lambda x: torch.nn.functional.gelu(x * 2.0).sum(), dynamic=False)
        x = torch.ones(4, device=device_type, requires_grad=True)
        with torch.enable_grad(), torch.autocast(device_type, enabled=False):
            fn(x).backward()
        if x.grad is None or not torch.isfinite(x.grad).all():
            return "the probe's gradient is missing or not finite"
    except Exception as e:  # noqa: BLE001 - any failure means: do not compile
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} ({_cxx_name()})"
    return None


def _cxx_name() -> str:
    try:
        from torch._inductor import config

        return f"C++ compiler {config.cpp.cxx!r}"
    except Exception:  # noqa: BLE001
        return "C++ compiler unknown"


class CompiledLayers:
    """The encoder layers of ``model``, compiled with inductor while :meth:`active` is entered.

    Args:
        model: a ``SentenceTransformer`` (its first module's ``auto_model``) or a Hugging Face model.
        enabled: ``False`` gives the eager path with the same interface (nothing compiled, nothing probed).
        what: named in the warning when the compiler fails (e.g. ``"the training loss"``).
    """

    def __init__(self, model: Any, enabled: bool = True, what: str = "the encoder") -> None:
        self.model = model
        self.what = what
        self.requested = bool(enabled)
        self.problem: str | None = None
        self.shapes: dict[tuple, int] = {}  # (shape, grad, training, autocast dtype) -> calls; each key is a graph
        self.compiles = 0  # graphs dynamo actually built inside run(): more than len(shapes) means other guards failed
        self._compiled: Any = None
        if self.requested and not encoder_layers(model):
            self.problem = "the model has no encoder layer stack to compile"

    @property
    def compiled(self) -> bool:
        """Whether the compiled path runs (requested, the model has layers, and the compiler works)."""
        return self.requested and self.problem is None

    def _check(self, device_type: str) -> bool:
        if not self.compiled:
            return False
        problem = compiler_problem(device_type)
        if problem is not None:
            self._fail(problem)
            return False
        if self._compiled is None:
            # one compiled callable for all layers: the layer's own __call__ machinery, traced with the layer as input
            self._compiled = torch.compile(_call_layer, dynamic=False)
        return True

    def _fail(self, problem: str) -> None:
        self.problem = problem
        warnings.warn(
            f"torch.compile (inductor) is not usable for {self.what}: {problem}; running the uncompiled path",
            RuntimeWarning, stacklevel=3,
        )

    @contextlib.contextmanager
    def active(self, device_type: str = "cpu") -> Iterator[bool]:
        """Inside, the encoder layers run compiled (yields ``True``) or, without a compiler, eager (``False``)."""
        if not self._check(device_type):
            yield False
            return
        layers = encoder_layers(self.model)
        compiled = self._compiled
        previous = [layer._compiled_call_impl for layer in layers]
        for layer in layers:
            layer._compiled_call_impl = functools.partial(compiled, layer)
        # dynamo keeps at most recompile_limit (8) graphs per function and runs the rest eager: the buckets x modes
        # of one run may pass 8, so the limit is raised while the layers are compiled
        limit = max(64, torch._dynamo.config.recompile_limit)
        try:
            with torch._dynamo.config.patch(recompile_limit=limit):
                yield True
        finally:
            for layer, old in zip(layers, previous):
                layer._compiled_call_impl = old

    def note_shape(self, rows: int, width: int) -> bool:
        """Count a chunk of ``rows`` x ``width`` about to run; ``True`` when it is a new graph (a compile)."""
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        key = (rows, width, torch.is_grad_enabled(), bool(getattr(self.model, "training", False)), str(dtype))
        new = key not in self.shapes
        self.shapes[key] = self.shapes.get(key, 0) + 1
        return new

    def run(self, fn: Any, *args: Any, device_type: str = "cpu", new_shape: bool = False) -> Any:
        """``fn(*args)`` with the layers compiled; a compile that fails (``new_shape``) warns and reruns eager."""
        from torch._dynamo.utils import counters

        with self.active(device_type) as on:
            if not on:
                return fn(*args)
            before = counters["stats"]["unique_graphs"]
            if not new_shape:
                try:
                    return fn(*args)
                finally:
                    self.compiles += counters["stats"]["unique_graphs"] - before
            try:
                return fn(*args)
            except Exception as e:  # noqa: BLE001 - a compiler failure must not end the run
                if isinstance(e, (KeyboardInterrupt, MemoryError)):
                    raise
                self._fail(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} "
                           f"({_cxx_name()})")
            finally:
                self.compiles += counters["stats"]["unique_graphs"] - before
        return fn(*args)

    def describe(self) -> dict[str, Any]:
        """For the run record: which path ran, why not the compiled one, the graphs expected (one per shape and
        mode: ``graphs``) and those dynamo built (``compiles``; more than ``graphs`` means that another guard, e.g.
        a hook on one layer, splits the layers' graph)."""
        return {
            "compile": self.requested,
            "path": "compiled (torch.compile inductor, encoder layers)" if self.compiled and self.requested
            else "uncompiled (eager)",
            "compile_problem": self.problem,
            "graphs": len(self.shapes) if self.compiled else 0,
            "compiles": self.compiles,
            "shapes": [list(k) for k in sorted({k[:2] for k in self.shapes})] if self.compiled else [],
        }


def _call_layer(layer: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    return layer._call_impl(*args, **kwargs)


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """The permutation that puts rows taken in ``order`` back in their original places.

    Example::

        >>> order = torch.tensor([2, 0, 1])
        >>> torch.tensor([30, 10, 20])[inverse_permutation(order)].tolist()
        [10, 20, 30]
    """
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return inverse


def in_text_order(parts: list[torch.Tensor], order: torch.Tensor, normalize_embeddings: bool = False) -> torch.Tensor:
    """The encoders' last step: embeddings of the texts taken in ``order`` (batch by batch, ``parts``) put back in
    the texts' order, L2-normalised when asked."""
    embeddings = torch.cat(parts)
    embeddings = embeddings[inverse_permutation(order).to(embeddings.device)]
    if normalize_embeddings:
        embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
    return embeddings


def encode_bucketed(model: Any, texts: list[str], *, batch_size: int = 64, layers: CompiledLayers | None = None,
                    normalize_embeddings: bool = False) -> torch.Tensor:
    """``model.encode(texts, convert_to_tensor=True)`` in fixed shapes: length-sorted batches of ``batch_size`` rows
    (the last filled with copies of its first row, dropped), each padded to its :func:`bucket_width`, the encoder
    layers compiled by ``layers`` (``None``: eager). Masked padding changes no vector beyond float rounding.

    Runs under ``torch.no_grad()`` and whatever autocast the caller set; returns ``[len(texts) x d]`` in the order
    of ``texts``.

    Example::

        >>> import tempfile, torch
        >>> from sentence_transformers_hybrid.testing import tiny_transformer_model
        >>> texts = ["the cat sat on the mat", "a dog", "birds fly south in winter", "hi"]
        >>> model = tiny_transformer_model(tempfile.mkdtemp(), texts).eval()
        >>> torch.allclose(encode_bucketed(model, texts, batch_size=3), model.encode(texts, convert_to_tensor=True),
        ...                atol=1e-5)
        True
    """
    if not texts:
        raise ValueError("encode_bucketed: no texts")
    features = model.preprocess(list(texts))
    mask = features["attention_mask"]
    rows, width = mask.shape
    lengths = mask.sum(1)
    order = torch.sort(lengths, descending=True, stable=True).indices
    out = []
    device = getattr(model, "device", torch.device("cpu"))
    with torch.no_grad():
        for begin in range(0, rows, batch_size):
            index = order[begin : begin + batch_size]
            n, cut = len(index), bucket_width(int(lengths[index[0]]), limit=getattr(model, "max_seq_length", None))
            if n < batch_size:
                index = torch.cat([index, index[:1].expand(batch_size - n)])
            batch = {}
            for key, value in features.items():
                if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == rows:
                    value = value[index]
                    if value.ndim >= 2 and value.shape[1] == width:
                        value = (value[:, :cut] if cut <= width else
                                 torch.nn.functional.pad(value, [0, 0] * (value.ndim - 2) + [0, cut - width]))
                    value = value.to(device)
                batch[key] = value

            def forward(batch: dict[str, Any] = batch) -> torch.Tensor:
                return model(batch)["sentence_embedding"]

            if layers is None:
                embedded = forward()
            else:
                new = layers.note_shape(len(index), cut)
                embedded = layers.run(forward, device_type=torch.device(device).type, new_shape=new)
            out.append(embedded[:n].float())
    return in_text_order(out, order, normalize_embeddings)
