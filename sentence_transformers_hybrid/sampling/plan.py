"""The epoch planner: which pairs form each batch of an epoch, as pure numpy on a :class:`PairLayout`.

:class:`~sentence_transformers_hybrid.sampling.HybridBatchSampler` validates its options and counts batches, then
asks :func:`plan_epoch` for the batches of each epoch; nothing here touches a dataset, a model or a trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..data.pair_dataset import PairLayout

__all__ = ["EpochPlan", "plan_epoch", "usable_groups"]


def usable_groups(layout: PairLayout, mode: str) -> np.ndarray:
    """bool ``[groups]``: the groups ``mode`` can use (``cross`` and ``hybrid``: those in two languages or more).

    Raises ``ValueError`` when a cross-lingual mode has no such group (the factory and the sampler both ask).
    """
    if mode not in ("cross", "hybrid"):
        return np.ones(layout.num_groups, dtype=bool)
    multi = layout.n_lang >= 2
    if not multi.any():
        raise ValueError(
            f"mode={mode!r} needs groups in at least two languages, but every group of the corpus has one language "
            f"({layout.languages}); use mode='mono' or 'mixed', or add translations"
        )
    return multi


@dataclass
class EpochPlan:
    """One epoch of batches, as the sampler yields them (one entry per *yielded* batch, i.e. per rank batch).

    Attributes:
        pairs: int64 pair ids of every example, batch after batch.
        bounds: int64 ``[num_batches + 1]``: batch ``i`` is ``pairs[bounds[i]:bounds[i + 1]]``.
        batch_mode: ``"mono"``, ``"cross"`` or ``"mixed"`` per batch.
        batch_language: mono batches' language index (into ``languages``), ``-1`` otherwise.
        batch_source: source index of each batch.
        step: the optimizer-step (global batch) index of each batch: ``batch // num_processes``.
        topped_up: number of examples re-drawn to fill a source's last global batch (several processes only).

    Example (the sampler builds plans with :func:`plan_epoch`; this one is written by hand)::

        >>> import numpy as np
        >>> from sentence_transformers_hybrid.sampling.plan import EpochPlan
        >>> plan = EpochPlan(pairs=np.array([4, 9, 13, 1, 7, 16]), bounds=np.array([0, 3, 6]),
        ...                  batch_mode=np.array(["mono", "cross"]), batch_language=np.array([1, -1]),
        ...                  batch_source=np.zeros(2, dtype=np.int64), step=np.arange(2))
        >>> len(plan), plan.batch(1).tolist(), str(plan.batch_mode[1])
        (2, [1, 7, 16], 'cross')
    """

    pairs: np.ndarray
    bounds: np.ndarray
    batch_mode: np.ndarray
    batch_language: np.ndarray
    batch_source: np.ndarray
    step: np.ndarray
    topped_up: int = 0

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def batch(self, i: int) -> np.ndarray:
        return self.pairs[self.bounds[i] : self.bounds[i + 1]]


def _small(a: np.ndarray) -> np.ndarray:
    """``a`` as the smallest unsigned dtype that holds it (numpy radix-sorts 8/16-bit ints when kind="stable")."""
    top = int(a.max()) if a.size else 0
    return a.astype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int64, copy=False)


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([stream, int(seed) % (2**63), int(epoch) % (2**63)])


def _max_flow(supply: np.ndarray, compat: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """Integer transport plan ``f[t, c] <= supply[t]`` row sums, ``<= demand[c]`` column sums, maximal total."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    T, C = compat.shape
    src, sink = T + C, T + C + 1
    rows, cols, caps = [], [], []
    big = int(supply.sum()) + 1
    for t in range(T):
        rows.append(src), cols.append(t), caps.append(int(supply[t]))
    ts, cs = np.nonzero(compat)
    rows += ts.tolist()
    cols += (cs + T).tolist()
    caps += [big] * len(ts)
    for c in range(C):
        rows.append(T + c), cols.append(sink), caps.append(int(demand[c]))
    graph = csr_matrix((np.asarray(caps, np.int32), (rows, cols)), shape=(T + C + 2, T + C + 2))
    flow = maximum_flow(graph, src, sink).flow.toarray()
    return np.maximum(flow[:T, T : T + C], 0).astype(np.int64)



def plan_epoch(
    layout: PairLayout,
    *,
    mode: str,
    usable: np.ndarray,
    global_batches: np.ndarray,
    source_rest: np.ndarray,
    batch_size: int,
    num_processes: int,
    seed: int | None,
    epoch: int,
    total_batches: int | None,
    num_epochs: float,
    alpha_at: Callable[[np.ndarray], np.ndarray],
) -> EpochPlan:
    """The batches of one epoch: pure numpy on the pair layout, deterministic in ``(seed, epoch)``.

    Args:
        layout: the corpus's :class:`~sentence_transformers_hybrid.data.pair_dataset.PairLayout`.
        mode: ``"mono"``, ``"cross"``, ``"mixed"`` or ``"hybrid"``.
        usable: bool ``[groups]``: the groups this mode can use.
        global_batches: global batches per source; ``source_rest``: size of each source's short last one (0: none).
        batch_size, num_processes: ``B`` and ``W``; a global batch holds ``W * B`` groups.
        seed, epoch: the random streams (numpy generators seeded with ``[stream, seed, epoch]``).
        total_batches, num_epochs: the horizon of ``alpha`` schedules (``total_batches`` when the trainer reported it).
        alpha_at: ``alpha`` at an array of training-progress values in [0, 1].
    """
    lay, B, W = layout, int(batch_size), int(num_processes)
    K = B * W
    L = lay.num_languages
    seed = 0 if seed is None else seed
    rng = _rng(seed, epoch, 1)
    S = len(lay.sources)
    nb = global_batches
    # 1. interleave sources: a uniform permutation of the multiset = drawing a source with probability
    #    proportional to its remaining batches, batch after batch
    src_seq = rng.permutation(np.repeat(np.arange(S), nb))
    T = len(src_seq)
    # position of each global batch inside its source; the source's last one may be short
    order = np.argsort(src_seq, kind="stable")
    pos_in_src = np.empty(T, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(nb)])
    pos_in_src[order] = np.arange(T) - np.repeat(starts[:-1], nb)
    cap = np.full(T, K, dtype=np.int64)
    is_last = pos_in_src == nb[src_seq] - 1
    short = is_last & (source_rest[src_seq] > 0)
    cap[short] = source_rest[src_seq[short]]
    # 2. batch types: 0..L-1 mono language, L cross, L + 1 mixed
    CROSS, MIXED = L, L + 1
    horizon = total_batches if total_batches else num_epochs * T * W
    progress = (epoch * T + np.arange(T)) * W / max(horizon, 1)
    if mode == "mono":
        is_mono = np.ones(T, dtype=bool)
    elif mode == "hybrid":
        is_mono = rng.random(T) < alpha_at(progress)
    else:
        is_mono = np.zeros(T, dtype=bool)
    btype = np.where(is_mono, -1, CROSS if mode in ("cross", "hybrid") else MIXED).astype(np.int64)
    # 3. per source: mono languages (stratified), then groups to batches by a max-flow over language sets
    group_of_slot = np.empty(int(cap.sum()), dtype=np.int64)
    slot_start = np.concatenate([[0], np.cumsum(cap)])
    topups: list[tuple[int, np.ndarray]] = []
    for s in range(S):
        sel = np.flatnonzero(src_seq == s)
        if len(sel) == 0:
            continue
        groups = np.flatnonzero(usable & (lay.group_source == s))
        groups = groups[rng.permutation(len(groups))]
        sid = lay.set_id[groups]
        set_present = np.flatnonzero(np.bincount(sid, minlength=len(lay.set_masks)))
        remap = np.zeros(len(lay.set_masks), dtype=np.int64)
        remap[set_present] = np.arange(len(set_present))
        tid = remap[sid]
        tmask = lay.set_masks[set_present]
        supply = np.bincount(tid, minlength=len(set_present))
        lang_counts = tmask.T.astype(np.int64) @ supply
        mono_b = sel[btype[sel] < 0]
        if len(mono_b):
            btype[mono_b] = _mono_languages(lang_counts, cap[mono_b], rng, K)
        # categories: mono language l (0..L-1), cross, mixed, unused (drop_last remainder)
        C = L + 3
        demand = np.bincount(btype[sel], weights=cap[sel], minlength=C).astype(np.int64)
        demand[L + 2] = len(groups) - demand.sum()
        compat = np.zeros((len(set_present), C), dtype=bool)
        compat[:, :L] = tmask
        compat[:, CROSS] = tmask.sum(axis=1) >= 2
        compat[:, MIXED] = True
        compat[:, L + 2] = True
        flow = _max_flow(supply, compat, demand)
        for _ in range(4 * L + 4):
            missing = demand - flow.sum(axis=0)
            if not missing[:L].any():
                break
            btype, demand, flow = _rebalance(lay, btype, sel, cap, demand, flow, supply, compat, tmask, missing)
        missing = demand - flow.sum(axis=0)
        if missing.any():
            short_l = [lay.languages[c] if c < L else ("cross", "mixed", "unused")[c - L] for c in np.flatnonzero(missing)]
            raise ValueError(
                f"source {lay.sources[s]!r}: cannot fill the batches of {short_l} with distinct groups "
                f"({len(groups)} groups, language counts {dict(zip(lay.languages, lang_counts.tolist()))})"
            )
        # groups ordered by type, each type split over categories by the flow, then shuffled inside a category
        if len(set_present) == 1:  # one language set (e.g. fully parallel): already random, split in order
            g_sorted = groups
        else:
            by_type = np.argsort(_small(tid), kind="stable")  # radix sort on small ints
            cat_sorted = np.repeat(np.tile(np.arange(C), len(set_present)), flow.ravel())
            cat = np.empty(len(groups), dtype=np.int64)
            cat[by_type] = cat_sorted
            shuffled = rng.permutation(len(groups))
            g_sorted = groups[shuffled[np.argsort(_small(cat[shuffled]), kind="stable")]]
        # batches of this source sorted by (category, position) take consecutive runs of g_sorted
        border = sel[np.lexsort((sel, btype[sel]))]
        run_start = np.concatenate([[0], np.cumsum(cap[border])[:-1]])
        k = np.arange(int(cap[border].sum()))
        dst = np.repeat(slot_start[border] - run_start, cap[border]) + k
        group_of_slot[dst] = g_sorted[k]
        if W > 1:
            for t in sel[cap[sel] < K]:
                in_batch = group_of_slot[slot_start[t] : slot_start[t + 1]]
                c = btype[t]
                ok = lay.mask[groups, c] if c < L else (lay.n_lang[groups] >= 2 if c == CROSS else np.ones(len(groups), bool))
                pool = np.setdiff1d(groups[ok], in_batch)
                need = K - len(in_batch)
                if len(pool) < need:
                    raise ValueError(
                        f"source {lay.sources[s]!r}: its last global batch ({len(in_batch)} groups) cannot be "
                        f"topped up to {K} with distinct groups; use drop_last=True or a smaller batch size"
                    )
                topups.append((int(t), rng.choice(pool, need, replace=False)))
    if topups:
        at = np.concatenate([np.full(len(gx), slot_start[t + 1]) for t, gx in topups])
        group_of_slot = np.insert(group_of_slot, at, np.concatenate([gx for _, gx in topups]))
        for t, gx in topups:
            cap[t] += len(gx)
    # 4. languages per example -> pair ids
    # pair id = pair_offset[g] + x * n + y, x/y the ranks of the query/passage language among g's n languages
    slot_type = np.repeat(btype, cap)
    g = group_of_slot
    n = lay.n_lang[g]
    pairs = lay.pair_offset[g]
    mono = slot_type < L
    if mono.any():  # x = y = rank of the batch language
        pairs[mono] += lay.lang_rank[g[mono], slot_type[mono]] * (n[mono] + 1)
    cross = slot_type == CROSS
    if cross.any():  # one uniform ordered pair x != y: k < n (n - 1), x = k // (n - 1), y skips x
        nc = n[cross]
        k = np.minimum((rng.random(len(nc)) * (nc * (nc - 1))).astype(np.int64), nc * (nc - 1) - 1)
        x, yc = np.divmod(k, nc - 1)
        pairs[cross] += x * nc + yc + (yc >= x)
    mixed = slot_type == MIXED
    if mixed.any():  # x = y uniform among the group's languages
        nm = n[mixed]
        pairs[mixed] += np.minimum((rng.random(len(nm)) * nm).astype(np.int64), nm - 1) * (nm + 1)
    # 5. split each global batch into its W rank batches
    if W == 1:
        bounds = np.concatenate([[0], np.cumsum(cap)])
        rep = 1
    else:
        bounds = np.arange(0, T * K + 1, B, dtype=np.int64)
        rep = W
    modes = np.where(btype < L, "mono", np.where(btype == CROSS, "cross", "mixed"))
    return EpochPlan(
        pairs=pairs,
        bounds=bounds.astype(np.int64),
        batch_mode=np.repeat(modes, rep),
        batch_language=np.repeat(np.where(btype < L, btype, -1), rep),
        batch_source=np.repeat(src_seq, rep),
        step=np.repeat(np.arange(T), rep),
        topped_up=int(sum(len(gx) for _, gx in topups)),
    )

def _mono_languages(counts: np.ndarray, caps: np.ndarray, rng: np.random.Generator, global_batch_size: int) -> np.ndarray:
    """Stratified mono languages: each of the source's languages gets floor/ceil of an equal share, shuffled."""
    langs = np.flatnonzero(counts >= min(global_batch_size, int(caps.max())))
    if len(langs) == 0:
        langs = np.flatnonzero(counts > 0)
    seq = np.resize(rng.permutation(langs), len(caps))
    return seq[rng.permutation(len(seq))]

def _rebalance(layout, btype, sel, cap, demand, flow, supply, compat, tmask, missing):
    """Move one mono batch from the language that cannot be filled to the one with most spare groups."""
    L = layout.num_languages
    worst = int(np.argmax(missing[:L]))
    have = tmask.T.astype(np.int64) @ supply  # groups of the source with each language
    spare = np.where(demand[:L] > 0, have - demand[:L], have) - np.where(np.arange(L) == worst, 10**12, 0)
    target = int(np.argmax(spare))
    cand = sel[(btype[sel] == worst)]
    if len(cand) == 0 or spare[target] <= 0:
        return btype, demand, flow
    t = cand[np.argmax(cap[cand])]
    btype = btype.copy()
    btype[t] = target
    demand = demand.copy()
    demand[worst] -= cap[t]
    demand[target] += cap[t]
    return btype, demand, _max_flow(supply, compat, demand)
