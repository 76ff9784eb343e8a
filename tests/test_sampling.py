"""HybridBatchSampler, training_dataset and hybrid_loss.

Batches are checked through the dataset's texts, which encode (group, language) as ``"q|<group>|<lang>"`` /
``"p|<group>|<lang>"``: the references never go through the sampler's own pair-id arithmetic.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections import Counter

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from accelerate.data_loader import BatchSamplerShard, SkipBatchSampler  # noqa: E402

from sentence_transformers_hybrid.data.corpus import ParallelCorpus  # noqa: E402
from sentence_transformers_hybrid.sampling import HybridBatchSampler, training_dataset  # noqa: E402

SEEDS = range(12)
pytestmark = pytest.mark.filterwarnings("ignore:Importing from 'sentence_transformers:DeprecationWarning")


# ---------------------------------------------------------------------------------------------------- fixtures
def make_corpus(n_groups, languages, seed=0, missing=False, sources=None, min_langs=2, max_langs=4):
    """Synthetic corpus: full parallel, or MLQA-like (each group in a random subset of min..max languages)."""
    rng = np.random.default_rng(seed)
    records = []
    for g in range(n_groups):
        if missing:
            k = int(rng.integers(min_langs, min(max_langs, len(languages)) + 1))
            langs = sorted(rng.choice(languages, size=k, replace=False).tolist())
        else:
            langs = list(languages)
        src = None
        if sources is not None:
            src = sources[g % len(sources)] if not isinstance(sources, dict) else _source_by_share(g, sources)
        for lang in langs:
            rec = {"group": f"g{g}", "lang": lang, "query": f"q|g{g}|{lang}", "passage": f"p|g{g}|{lang}"}
            if src is not None:
                rec["source"] = src
            records.append(rec)
    return ParallelCorpus.from_records(records)


def _source_by_share(g, shares):
    """Deterministic source assignment: shares = {name: count}, groups 0.. filled in order."""
    acc = 0
    for name, count in shares.items():
        acc += count
        if g < acc:
            return name
    raise AssertionError("shares too small")


def parse(ds, batch):
    """[(group, query lang, passage lang)] of a batch, read from the resolved texts."""
    rows = ds[list(batch)]
    out = []
    for q, p in zip(rows["query"], rows["passage"]):
        _, gq, lq = q.split("|")
        _, gp, lp = p.split("|")
        assert gq == gp, f"query and passage from different groups: {q!r} / {p!r}"
        out.append((gq, lq, lp))
    return out


def sampler_for(corpus, batch_size, mode="hybrid", alpha=None, W=1, drop_last=False, seed=0, ds=None):
    ds = corpus.to_dataset() if ds is None else ds
    return HybridBatchSampler.configure(corpus, alpha=alpha, mode=mode, num_processes=W)(
        ds, batch_size=batch_size, drop_last=drop_last, seed=seed
    ), ds


def steps(batches, W):
    return [sum((list(b) for b in batches[i : i + W]), []) for i in range(0, len(batches), W)]


# ---------------------------------------------------------------------------------------------------- dataset
def test_dataset_rows_are_every_language_pair_of_every_group_once():
    corpus = make_corpus(30, ["de", "en", "es", "fr"], missing=True, min_langs=1)
    ds = training_dataset(corpus)
    expected = Counter()
    for rec in corpus.to_records():
        for other in corpus.group_languages(rec["group"]):
            expected[(rec["group"], rec["lang"], other)] += 1
    got = Counter(parse(ds, range(len(ds))))
    assert got == expected
    assert set(ds[0]) == {"query", "passage"}


def test_dataset_is_tiny_in_memory():
    corpus = make_corpus(400, [f"l{i}" for i in range(10)])
    ds = corpus.to_dataset()
    assert len(ds) == 400 * 100
    buffers = {b.address for col in ds.data.table.columns for ch in col.chunks for b in ch.buffers() if b is not None}
    # two shared arange buffers (plus their validity/no-null None), not 40k stored ids
    assert len(buffers) <= 4


# ---------------------------------------------------------------------------------------------------- semantics
@pytest.mark.parametrize("W", [1, 2, 4])
@pytest.mark.parametrize("mode", ["mono", "cross", "mixed", "hybrid"])
def test_batches_follow_their_mode_and_no_group_repeats_in_a_step(mode, W):
    corpus = make_corpus(240, ["ar", "de", "en", "hi", "zh"], missing=True, sources=["a", "b"], seed=W)
    for seed in SEEDS:
        sampler, ds = sampler_for(corpus, 6, mode=mode, W=W, seed=seed)
        plan = sampler.epoch_plan()
        batches = list(sampler)
        assert len(batches) == len(sampler) == len(plan)
        for s, step in enumerate(steps(batches, W)):
            ex = parse(ds, step)
            groups = [g for g, _, _ in ex]
            assert len(set(groups)) == len(groups), f"group repeated in step {s}"
            assert len({corpus.group_source[corpus._group_position(g)] for g in groups}) == 1, "mixed sources"
            same = [lq == lp for _, lq, lp in ex]
            qlangs = {lq for _, lq, _ in ex}
            if mode == "mono" or (mode == "hybrid" and all(same) and len(qlangs) == 1):
                assert all(same) and len(qlangs) == 1
            elif mode in ("cross", "hybrid"):
                assert not any(same), f"cross step {s} has an X-X pair"
            else:
                assert all(same)
            modes = set(plan.batch_mode[s * W : (s + 1) * W])
            assert len(modes) == 1, "ranks of one step got different batch types"


def test_hybrid_batches_are_mono_or_cross_never_both():
    corpus = make_corpus(200, ["de", "en", "fr"])
    sampler, ds = sampler_for(corpus, 10, mode="hybrid", alpha=0.5)
    kinds = set()
    for batch in sampler:
        ex = parse(ds, batch)
        if all(lq == lp for _, lq, lp in ex):
            assert len({lq for _, lq, _ in ex}) == 1
            kinds.add("mono")
        else:
            assert all(lq != lp for _, lq, lp in ex)
            kinds.add("cross")
    assert kinds == {"mono", "cross"}


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_hybrid_mono_fraction_matches_alpha(alpha):
    corpus = make_corpus(300, ["de", "en", "fr"])
    mono = total = 0
    for seed in range(40):
        sampler, ds = sampler_for(corpus, 10, alpha=alpha, seed=seed)
        for batch in sampler:
            ex = parse(ds, batch[:2])
            mono += ex[0][1] == ex[0][2]
            total += 1
    sd = math.sqrt(alpha * (1 - alpha) / total)
    assert abs(mono / total - alpha) < 4 * sd, (mono / total, alpha)


def test_alpha_schedule_follows_progress():
    corpus = make_corpus(400, ["de", "en"])
    first = last = 0
    for seed in range(10):
        sampler, ds = sampler_for(corpus, 10, alpha=lambda p: 1.0 - p, seed=seed)
        kinds = [parse(ds, b[:1])[0] for b in sampler]
        mono = np.array([lq == lp for _, lq, lp in kinds])
        first += mono[:10].sum()
        last += mono[-10:].sum()
    assert first > 80 and last < 20  # alpha ~ 0.9+ at the start, ~ 0.1- at the end


def test_every_usable_group_once_per_epoch_single_process():
    corpus = make_corpus(203, ["de", "en", "es", "fr"], missing=True, min_langs=1, sources={"x": 150, "y": 53})
    multi = {g for g in corpus.groups if len(corpus.group_languages(g)) >= 2}
    for mode in ("mono", "mixed", "cross", "hybrid"):
        for seed in range(5):
            sampler, ds = sampler_for(corpus, 8, mode=mode, seed=seed)
            used = Counter(g for b in sampler for g, _, _ in parse(ds, b))
            assert set(used.values()) == {1}
            assert set(used) == (set(corpus.groups) if mode in ("mono", "mixed") else multi)


def test_drop_last_uses_only_full_batches_and_each_group_at_most_once():
    corpus = make_corpus(103, ["de", "en"], sources={"x": 70, "y": 33})
    sampler, ds = sampler_for(corpus, 10, drop_last=True)
    batches = list(sampler)
    assert all(len(b) == 10 for b in batches) and len(batches) == 7 + 3
    used = Counter(g for b in batches for g, _, _ in parse(ds, b))
    assert set(used.values()) == {1} and len(used) == 100


def test_several_processes_top_up_the_last_batch_of_a_source():
    corpus = make_corpus(134, ["de", "en", "fr"], sources={"x": 93, "y": 41})
    for W in (2, 4):
        sampler, ds = sampler_for(corpus, 5, W=W)
        batches = list(sampler)
        assert all(len(b) == 5 for b in batches)
        used = Counter(g for b in batches for g, _, _ in parse(ds, b))
        assert set(used) == set(corpus.groups)
        assert sum(used.values()) - len(used) == sampler.epoch_plan().topped_up > 0


def test_mono_languages_get_equal_shares_with_missing_languages():
    langs = ["ar", "de", "en", "es", "hi", "vi", "zh"]
    corpus = make_corpus(1400, langs, missing=True, seed=3)
    for seed in range(5):
        sampler, ds = sampler_for(corpus, 10, mode="mono", seed=seed)
        per_lang = Counter(parse(ds, b[:1])[0][1] for b in sampler)
        assert set(per_lang) == set(langs)
        assert max(per_lang.values()) - min(per_lang.values()) <= 1, per_lang


def test_mono_with_a_scarce_language_still_uses_every_group_once():
    records = [
        {"group": f"g{g}", "lang": lang, "query": f"q|g{g}|{lang}", "passage": f"p|g{g}|{lang}"}
        for g in range(200)
        for lang in (["en", "de"] if g >= 12 else ["en", "hi"])
    ]
    corpus = ParallelCorpus.from_records(records)
    sampler, ds = sampler_for(corpus, 10, mode="mono")
    ex = [parse(ds, b) for b in sampler]
    assert all(len({lq for _, lq, _ in e}) == 1 for e in ex)
    assert Counter(g for e in ex for g, _, _ in e) == Counter(corpus.groups)


def test_cross_pairs_cover_ordered_language_pairs_uniformly():
    corpus = make_corpus(300, ["de", "en", "fr"])
    pairs = Counter()
    for seed in range(10):
        sampler, ds = sampler_for(corpus, 10, mode="cross", seed=seed)
        pairs.update((lq, lp) for b in sampler for _, lq, lp in parse(ds, b))
    assert len(pairs) == 6
    n = sum(pairs.values())
    for count in pairs.values():  # each of 6 ordered pairs: p = 1/6
        assert abs(count / n - 1 / 6) < 4 * math.sqrt((1 / 6) * (5 / 6) / n)


def test_sources_are_interleaved_in_proportion_to_their_size():
    corpus = make_corpus(400, ["de", "en"], sources={"big": 300, "small": 100})
    share_first_half = []
    for seed in range(30):
        sampler, ds = sampler_for(corpus, 10, seed=seed)
        src = [corpus.group_source[corpus._group_position(parse(ds, b[:1])[0][0])] for b in sampler]
        names = [corpus.sources[s] for s in src]
        assert Counter(names) == {"big": 30, "small": 10}
        share_first_half.append(names[:20].count("big") / 20)
    assert abs(np.mean(share_first_half) - 0.75) < 0.05


# ---------------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_batches_and_set_epoch_changes_them():
    corpus = make_corpus(120, ["de", "en", "fr"], missing=True)
    a, ds = sampler_for(corpus, 8, seed=7)
    b, _ = sampler_for(corpus, 8, seed=7, ds=ds)
    c, _ = sampler_for(corpus, 8, seed=8, ds=ds)
    first = list(a)
    assert first == list(b)
    assert first != list(c)
    a.set_epoch(1)
    second = list(a)
    assert second != first and sorted(map(sorted, second)) != sorted(map(sorted, first))
    a.set_epoch(0)
    assert list(a) == first


def test_resume_mid_epoch_continues_with_the_same_batches():
    corpus = make_corpus(160, ["de", "en", "fr"])
    full, ds = sampler_for(corpus, 8, seed=3)
    full.set_epoch(2)
    expected = list(full)
    fresh, _ = sampler_for(corpus, 8, seed=3, ds=ds)  # a new process after a restart
    fresh.set_epoch(2)
    assert list(SkipBatchSampler(fresh, skip_batches=5)) == expected[5:]


@pytest.mark.parametrize("W", [2, 4])
def test_accelerate_shards_give_each_step_distinct_groups(W):
    corpus = make_corpus(250, ["de", "en", "fr", "zh"], missing=True, sources=["a", "b", "c"])
    sampler, ds = sampler_for(corpus, 4, W=W, seed=1)
    per_rank = [list(BatchSamplerShard(sampler, num_processes=W, process_index=r, even_batches=False)) for r in range(W)]
    assert len({len(r) for r in per_rank}) == 1
    assert all(len(BatchSamplerShard(sampler, W, r, even_batches=False)) == len(per_rank[r]) for r in range(W))
    assert sum(len(r) for r in per_rank) == len(sampler)
    for step in zip(*per_rank):
        ex = parse(ds, [i for b in step for i in b])
        groups = [g for g, _, _ in ex]
        assert len(set(groups)) == len(groups)
        mono = [lq == lp for _, lq, lp in ex]
        assert all(mono) and len({lq for _, lq, _ in ex}) == 1 or not any(mono)


# ---------------------------------------------------------------------------------------------------- bad input
def test_bad_alpha_and_mode():
    corpus = make_corpus(20, ["de", "en"])
    for alpha in (-0.1, 1.5, float("nan"), "high"):
        with pytest.raises(ValueError, match="alpha"):
            HybridBatchSampler.configure(corpus, alpha=alpha)
    with pytest.raises(ValueError, match="alpha schedule returned 1.5 at progress 0.75"):
        HybridBatchSampler.configure(corpus, alpha=lambda p: 2 * p)
    with pytest.raises(ValueError, match="mode must be one of"):
        HybridBatchSampler.configure(corpus, mode="x-x")


@pytest.mark.parametrize("mode", ["cross", "hybrid"])
def test_cross_modes_need_a_multilingual_group(mode):
    corpus = make_corpus(20, ["de", "en"], missing=True, min_langs=1, max_langs=1)
    with pytest.raises(ValueError, match="at least two languages"):
        HybridBatchSampler.configure(corpus, mode=mode)
    HybridBatchSampler.configure(corpus, mode="mono")  # fine


def test_batch_larger_than_a_source_names_the_source():
    corpus = make_corpus(60, ["de", "en"], sources={"big": 50, "tiny": 10})
    with pytest.raises(ValueError, match="source 'tiny' has 10 usable"):
        sampler_for(corpus, 16, drop_last=True)
    with pytest.raises(ValueError, match="source 'tiny'"):
        sampler_for(corpus, 8, W=2)
    sampler, ds = sampler_for(corpus, 16)  # one process, drop_last=False: one smaller batch
    assert sorted(len(b) for b in sampler)[:2] == [2, 10]


def test_wrong_dataset_is_rejected():
    corpus = make_corpus(20, ["de", "en"])
    factory = HybridBatchSampler.configure(corpus)
    with pytest.raises(ValueError, match="corpus.to_dataset"):
        factory(corpus.to_hf_dataset(), batch_size=4, drop_last=False)
    with pytest.raises(ValueError, match="another corpus"):
        factory(make_corpus(21, ["de", "en"]).to_dataset(), batch_size=4, drop_last=False)
    with pytest.raises(ValueError, match="filtered, selected or shuffled"):
        factory(corpus.to_dataset().select(range(10)), batch_size=4, drop_last=False)
    with pytest.raises(ValueError, match="filtered, selected or shuffled"):
        factory(corpus.to_dataset().shuffle(seed=0), batch_size=4, drop_last=False)


def test_instance_instead_of_factory_raises():
    corpus = make_corpus(20, ["de", "en"])
    ds = corpus.to_dataset()
    instance = HybridBatchSampler.configure(corpus)(ds, batch_size=4, drop_last=False)
    with pytest.raises(TypeError, match="instance"):
        instance(ds, batch_size=4, drop_last=False, valid_label_columns=None, generator=None, seed=0)


# ---------------------------------------------------------------------------------------------------- alpha is hybrid's
@pytest.mark.parametrize("mode", ["mono", "cross", "mixed"])
def test_a_mode_without_alpha_records_none(mode):
    corpus = make_corpus(20, ["de", "en"])
    factory = HybridBatchSampler.configure(corpus, mode=mode)
    assert "alpha" not in factory.config() and "alpha" not in repr(factory)
    sampler = factory(corpus.to_dataset(), batch_size=4, drop_last=False)
    assert sampler.alpha is None and "alpha" not in sampler.config() and sampler.config()["mode"] == mode
    with pytest.raises(ValueError, match=f"mode='{mode}' has no alpha"):
        sampler.alpha_at(np.array([0.5]))


def test_hybrid_alpha_defaults_to_the_papers_and_is_recorded():
    corpus = make_corpus(20, ["de", "en"])
    factory = HybridBatchSampler.configure(corpus)
    sampler = factory(corpus.to_dataset(), batch_size=4, drop_last=False)
    assert factory.config()["alpha"] == sampler.config()["alpha"] == 0.5
    assert HybridBatchSampler.configure(corpus, alpha=0.25)(corpus.to_dataset(), 4, False).config()["alpha"] == 0.25


@pytest.mark.parametrize("mode", ["mono", "cross", "mixed"])
def test_alpha_given_with_another_mode_is_refused_naming_it(mode):
    corpus = make_corpus(20, ["de", "en"])
    with pytest.raises(ValueError, match=f"alpha=0.3 applies to mode='hybrid' only; mode='{mode}' has no alpha"):
        HybridBatchSampler.configure(corpus, alpha=0.3, mode=mode)
    with pytest.raises(ValueError, match="applies to mode='hybrid' only"):
        HybridBatchSampler(corpus.to_dataset(), 4, False, mode=mode, alpha=0.5, corpus=corpus, num_processes=1)


def test_a_mono_run_through_the_stock_trainer_records_no_alpha(tmp_path):
    """hybrid_sampler_config.json and the model card of a run that never mixed batch types hold no alpha."""
    corpus = make_corpus(24, ["de", "en"])
    _, model, _, _ = _train(corpus, tmp_path / "run", max_steps=4, save_steps=2, mode="mono")
    for where in (tmp_path / "run" / "checkpoint-2", tmp_path / "run"):
        cfg = json.loads((where / "hybrid_sampler_config.json").read_text())
        assert cfg["mode"] == "mono" and "alpha" not in cfg, cfg
    model.save_pretrained(str(tmp_path / "final"))
    card = (tmp_path / "final" / "README.md").read_text()
    line = next(x for x in card.splitlines() if "`batch_sampler`" in x)
    assert '"mode": "mono"' in line and '"alpha"' not in line, line


# ---------------------------------------------------------------------------------------------------- world size
def test_world_size_fails_loudly_when_accelerate_cannot_tell(monkeypatch):
    """Planning for one process under DDP would put one group into several ranks' batches: no silent 1."""
    import accelerate

    from sentence_transformers_hybrid.sampling.sampler import world_size

    class BrokenState:
        def __init__(self):
            raise RuntimeError("NCCL could not initialise")

    monkeypatch.setattr(accelerate, "PartialState", BrokenState)
    with pytest.raises(RuntimeError, match=r"PartialState\(\) failed \(RuntimeError: NCCL could not initialise\).*"
                                           r"num_processes="):
        world_size()
    corpus = make_corpus(20, ["de", "en"])
    with pytest.raises(RuntimeError, match="cannot tell the number of processes"):
        HybridBatchSampler.configure(corpus)(corpus.to_dataset(), batch_size=4, drop_last=False)
    sampler = HybridBatchSampler.configure(corpus, num_processes=1)(corpus.to_dataset(), batch_size=4, drop_last=False)
    assert sampler.num_processes == 1  # told, so never asked


def test_world_size_without_accelerate_is_one_process_unless_launched_distributed(monkeypatch):
    import sys

    from sentence_transformers_hybrid.sampling.sampler import world_size

    monkeypatch.setitem(sys.modules, "accelerate", None)  # "import accelerate" raises ImportError
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"WORLD_SIZE='2'.*accelerate is not installed.*num_processes="):
        world_size()


def test_factory_pickles_without_corpus_or_lambda():
    corpus = make_corpus(20, ["de", "en"])
    factory = HybridBatchSampler.configure(corpus, alpha=lambda p: 0.5 * (1 - p))
    clone = pickle.loads(pickle.dumps(factory))
    assert clone.corpus is None and clone.alpha["values"]["0"] == 0.5
    with pytest.raises(ValueError, match="unpickled"):
        clone(corpus.to_dataset(), batch_size=4, drop_last=False)


def test_a_factory_pickled_under_its_old_module_path_still_loads():
    """Checkpoints' training_args.bin pickled the factory as sampling.trainer.HybridBatchSamplerFactory."""
    import sys
    import warnings

    from sentence_transformers_hybrid.sampling.factory import HybridBatchSamplerFactory

    data = pickle.dumps(HybridBatchSampler.configure(make_corpus(20, ["de", "en"]), mode="mono"))
    old = data.replace(b"sentence_transformers_hybrid.sampling.factory", b"sentence_transformers_hybrid.sampling.trainer")
    assert old != data
    sys.modules.pop("sentence_transformers_hybrid.sampling.trainer", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clone = pickle.loads(old)
    assert type(clone) is HybridBatchSamplerFactory and clone.mode == "mono" and clone.corpus is None
    assert any(issubclass(w.category, DeprecationWarning) and "sampling.factory" in str(w.message) for w in caught)


# ---------------------------------------------------------------------------------------------------- loss
def _tiny_model(texts):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("|", "isolated")
    tok.train_from_iterator(list(texts) + ["Query: ", "Passage: "], trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))
    return SentenceTransformer(modules=[StaticEmbedding(tok, embedding_dim=16)], device="cpu")


def test_hybrid_loss_is_the_paper_configuration():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from sentence_transformers_hybrid.losses import hybrid_loss

    model = _tiny_model(["q|g0|en"])
    loss = hybrid_loss(model)
    assert type(loss) is MultipleNegativesRankingLoss
    assert loss.scale == pytest.approx(20.0) and loss.similarity_fct.__name__ == "cos_sim"
    assert loss.directions == ("query_to_doc",)
    sym = hybrid_loss(model, symmetric=True, temperature=0.1, gather_across_devices=True)
    assert sym.directions == ("query_to_doc", "doc_to_query") and sym.partition_mode == "per_direction"
    assert sym.scale == pytest.approx(10.0) and sym.gather_across_devices
    assert hybrid_loss(model, scale=30.0).scale == pytest.approx(30.0)
    with pytest.raises(ValueError, match="temperature"):
        hybrid_loss(model, temperature=0)
    with pytest.raises(ValueError, match="disagree"):
        hybrid_loss(model, scale=30.0, temperature=0.05)


def test_hybrid_loss_cached_path_is_cached_mnrl_with_the_same_loss(tmp_path):
    import torch
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    from sentence_transformers_hybrid.losses import hybrid_loss
    from sentence_transformers_hybrid.testing import tiny_transformer_model

    texts = [f"question {i} about topic {i % 7}" for i in range(40)]
    model = tiny_transformer_model(tmp_path, texts)
    cached = hybrid_loss(model, cached=True, mini_batch_size=4)
    assert isinstance(cached, CachedMultipleNegativesRankingLoss) and cached.mini_batch_size == 4
    assert cached.scale == pytest.approx(20.0)
    features = [model.preprocess(texts[:12]), model.preprocess(texts[12:24])]
    with torch.no_grad():
        plain_value = hybrid_loss(model)(features, None).item()
    cached_value = cached([{k: getattr(v, "clone", lambda: v)() for k, v in f.items()} for f in features], None).item()
    assert cached_value == pytest.approx(plain_value, rel=1e-4)  # GradCache: same loss, bounded memory


# ---------------------------------------------------------------------------------------------------- trainer
def _train(corpus, out, max_steps, save_steps=None, resume=None, per_device=8, mode="hybrid"):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    model = _tiny_model([r["query"] + r["passage"] for r in corpus.to_records()])
    factory = HybridBatchSampler.configure(corpus, alpha=0.5 if mode == "hybrid" else None, mode=mode)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=per_device, learning_rate=3e-5, weight_decay=0.01,
        batch_sampler=factory,
        prompts={"query": "Query: ", "passage": "Passage: "},
        max_steps=max_steps, save_steps=save_steps or max_steps, report_to="none", use_cpu=True,
        disable_tqdm=True, dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=corpus.to_dataset(),
                                         loss=MultipleNegativesRankingLoss(model), callbacks=[factory.callback])
    seen = []
    collate = trainer.data_collator.preprocess_fn

    def spy(inputs, prompt=None, **kwargs):  # what the loss gets, tokenized right after this
        seen.append((prompt, list(inputs)))
        return collate(inputs, prompt=prompt, **kwargs)

    trainer.data_collator.preprocess_fn = spy
    trainer.train(resume_from_checkpoint=resume)
    batches = [list(zip(q[1], p[1])) for q, p in zip(seen[0::2], seen[1::2])]
    prompts = {(q[0], p[0]) for q, p in zip(seen[0::2], seen[1::2])}
    return trainer, model, batches, prompts


def test_stock_trainer_trains_on_the_sampler_batches_and_records_the_config(tmp_path):
    corpus = make_corpus(48, ["de", "en", "fr"], sources=["a", "b"])
    trainer, model, batches, prompts = _train(corpus, tmp_path / "run", max_steps=8, save_steps=4)
    assert prompts == {("Query: ", "Passage: ")}
    sampler = trainer.args.batch_sampler.samplers[-1]
    ds = corpus.to_dataset()
    epoch0 = [ds[b] for b in HybridBatchSampler.configure(corpus)(ds, batch_size=8, drop_last=False, seed=42)]
    assert len(sampler) == 6
    seen = batches[:8]
    # steps 1..6 are epoch 0 exactly as a fresh sampler with the trainer's seed plans it; 7..8 open epoch 1
    for got, want in zip(seen[:6], epoch0):
        assert [q for q, _ in got] == want["query"] and [p for _, p in got] == want["passage"]
    for got in seen:
        ex = [(q.split("|")[1], q.split("|")[2], p.split("|")[2]) for q, p in got]
        assert len({g for g, _, _ in ex}) == len(ex)
        same = [a == b for _, a, b in ex]
        assert (all(same) and len({a for _, a, _ in ex}) == 1) or not any(same)
    assert seen[6:8] != seen[:2]
    # records: JSON in checkpoints and output_dir, model card hyperparameters and tags
    for where in (tmp_path / "run" / "checkpoint-4", tmp_path / "run"):
        cfg = json.loads((where / "hybrid_sampler_config.json").read_text())
        assert cfg["mode"] == "hybrid" and cfg["alpha"] == 0.5 and cfg["seed"] == 42
        assert cfg["languages"] == ["de", "en", "fr"] and cfg["sources"] == ["a", "b"] and cfg["batch_size"] == 8
    model.save_pretrained(str(tmp_path / "final"))
    card = (tmp_path / "final" / "README.md").read_text()
    assert '`batch_sampler`: {"sampler": "sentence_transformers_hybrid.HybridBatchSampler", "mode": "hybrid"' in card
    assert "sampler-mode:hybrid" in card


def test_stock_trainer_resumes_mid_epoch_with_the_same_batches(tmp_path):
    corpus = make_corpus(40, ["de", "en"])
    _, _, full, _ = _train(corpus, tmp_path / "a", max_steps=8, save_steps=7)  # 5 batches/epoch: step 7 is epoch 1
    _, _, resumed, _ = _train(corpus, tmp_path / "a", max_steps=8, resume=str(tmp_path / "a" / "checkpoint-7"))
    assert resumed[0] == full[7] and resumed[0] != full[2]  # epoch 1's batch 3, not epoch 0's


@pytest.mark.parametrize("what", ["instance", "class"])
def test_trainer_rejects_an_instance_or_the_bare_class(tmp_path, what):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    corpus = make_corpus(20, ["de", "en"])
    ds = corpus.to_dataset()
    model = _tiny_model(["q|g0|en"])
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, report_to="none", use_cpu=True,
        batch_sampler=HybridBatchSampler.configure(corpus)(ds, batch_size=4, drop_last=False)
        if what == "instance" else HybridBatchSampler,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=MultipleNegativesRankingLoss(model))
    with pytest.raises(TypeError if what == "instance" else ValueError, match="configure"):
        trainer.train()
