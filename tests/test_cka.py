"""CKA functions, the CKAEvaluator and the layer-wise helpers, checked against slow references written here."""

from __future__ import annotations

import csv
import os
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sentence_transformers_hybrid.cka import (  # noqa: E402
    MinibatchCKA,
    cka_matrix,
    gram_cka,
    layer_embeddings,
    layerwise_cka,
    linear_cka,
    linear_cka_matrix,
    minibatch_cka,
    plot_cka_heatmap,
    rbf_cka,
)
from sentence_transformers_hybrid.evaluation_cka import CKAEvaluator  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------------
# slow references: explicit n x n matrices, float64, straight from the papers' formulas
# ---------------------------------------------------------------------------------------------------------------------
def ref_hsic(K: np.ndarray, L: np.ndarray, debiased: bool) -> float:
    n = K.shape[0]
    if not debiased:  # Gretton et al. 2005: tr(KHLH) / (n-1)^2
        H = np.eye(n) - np.ones((n, n)) / n
        return float(np.trace(K @ H @ L @ H)) / (n - 1) ** 2
    # Song et al. 2012, HSIC_1 with the diagonals removed
    Kt = K - np.diag(np.diag(K))
    Lt = L - np.diag(np.diag(L))
    one = np.ones(n)
    value = np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (
        one @ Kt @ Lt @ one
    )
    return float(value) / (n * (n - 3))


def ref_cka_gram(K: np.ndarray, L: np.ndarray, debiased: bool) -> float:
    return ref_hsic(K, L, debiased) / np.sqrt(ref_hsic(K, K, debiased) * ref_hsic(L, L, debiased))


def ref_linear_cka(X, Y, debiased: bool) -> float:
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    return ref_cka_gram(X @ X.T, Y @ Y.T, debiased)


def ref_rbf_gram(X: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * threshold**2 * np.median(d2)))


def correlated(rng, n, d1, d2, offset=0.0):
    z = rng.standard_normal((n, 3))
    X = z @ rng.standard_normal((3, d1)) + 0.5 * rng.standard_normal((n, d1)) + offset
    Y = np.tanh(z @ rng.standard_normal((3, d2))) + 0.5 * rng.standard_normal((n, d2)) - offset
    return X, Y


SHAPES = [(7, 5, 9), (40, 100, 60), (300, 12, 7), (1000, 24, 40)]  # n < d (Gram route) and n > d (feature route)


# ---------------------------------------------------------------------------------------------------------------------
# exactness
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("n,d1,d2", SHAPES)
def test_linear_cka_matches_gram_reference_on_random_data(n, d1, d2, debiased):
    rng = np.random.default_rng(n + d1)
    X, Y = rng.standard_normal((n, d1)), rng.standard_normal((n, d2))
    assert linear_cka(X, Y, debiased, chunk_size=64) == pytest.approx(ref_linear_cka(X, Y, debiased), abs=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("n,d1,d2", SHAPES)
def test_linear_cka_matches_gram_reference_on_correlated_data(n, d1, d2, debiased):
    X, Y = correlated(np.random.default_rng(1), n, d1, d2, offset=5.0)
    expected = ref_linear_cka(X, Y, debiased)
    assert linear_cka(X, Y, debiased) == pytest.approx(expected, abs=1e-9)
    assert linear_cka(X, Y, debiased, chunk_size=3) == pytest.approx(expected, abs=1e-9)  # chunking is exact


@pytest.mark.parametrize("debiased", [False, True])
def test_gram_cka_matches_reference_for_any_kernel(debiased):
    X, Y = correlated(np.random.default_rng(2), 60, 8, 5)
    K, L = np.exp(-np.abs(X @ X.T) / 10), (Y @ Y.T + 1.0) ** 2
    assert gram_cka(K, L, debiased) == pytest.approx(ref_cka_gram(K, L, debiased), abs=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_matches_reference_rbf_gram(debiased):
    X, Y = correlated(np.random.default_rng(3), 80, 6, 4)
    for threshold in (0.5, 1.0):
        expected = ref_cka_gram(ref_rbf_gram(X, threshold), ref_rbf_gram(Y, threshold), debiased)
        assert rbf_cka(X, Y, debiased, threshold=threshold) == pytest.approx(expected, abs=1e-9)


def test_rbf_cka_refuses_large_n_with_a_clear_limit():
    X = np.zeros((11, 2)) + np.arange(11)[:, None]
    with pytest.raises(ValueError, match="max_n=10"):
        rbf_cka(X, X, max_n=10)


# ---------------------------------------------------------------------------------------------------------------------
# invariances
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_matrix_with_itself_is_one(debiased):
    X = np.random.default_rng(4).standard_normal((200, 30))
    assert linear_cka(X, X, debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_transform_isotropic_scaling_and_translation(debiased):
    rng = np.random.default_rng(5)
    X, Y = correlated(rng, 500, 20, 15)
    Q, _ = np.linalg.qr(rng.standard_normal((15, 15)))
    base = linear_cka(X, Y, debiased)
    assert linear_cka(X, 7.5 * Y @ Q + 3.0, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(1e-3 * X, Y, debiased) == pytest.approx(base, abs=1e-10)
    # ...but not to an anisotropic rescaling, so the test can fail
    assert abs(linear_cka(X * np.linspace(0.1, 10, 20), Y, debiased) - base) > 1e-3


def test_float32_and_torch_inputs_give_the_float64_answer():
    import torch

    rng = np.random.default_rng(6)
    # a large common offset: float32 accumulation of X^T X loses ~all significant digits of the centred products
    X, Y = correlated(rng, 600, 16, 16, offset=1000.0)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    # the reference centres the exactly upcast data first (CKA is translation invariant): a raw Gram of values
    # near 1000 would itself lose digits
    X64, Y64 = X32.astype(np.float64), Y32.astype(np.float64)
    X64, Y64 = X64 - X64.mean(0), Y64 - Y64.mean(0)
    for debiased in (False, True):
        expected = ref_linear_cka(X64, Y64, debiased)
        assert linear_cka(X32, Y32, debiased, chunk_size=128) == pytest.approx(expected, abs=1e-10)
        assert linear_cka(torch.from_numpy(X32), torch.from_numpy(Y32), debiased) == pytest.approx(expected, abs=1e-10)
    bf = torch.from_numpy(X32).to(torch.bfloat16)
    B64 = bf.double().numpy()
    exact = ref_linear_cka(B64 - B64.mean(0), Y64, True)
    assert linear_cka(bf, Y32, True) == pytest.approx(exact, abs=1e-10)


def test_biased_estimator_is_inflated_on_independent_data_and_debiased_is_not():
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((400, 100)), rng.standard_normal((400, 100))
    assert linear_cka(X, Y) > 0.15  # ~ d / (n + d) for independent Gaussians
    assert abs(linear_cka(X, Y, debiased=True)) < 0.02


# ---------------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------------
def test_different_numbers_of_rows_raise():
    with pytest.raises(ValueError, match="X has 10 rows but Y has 9"):
        linear_cka(np.ones((10, 3)), np.ones((9, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise_naming_row_and_column(bad):
    X = np.random.default_rng(8).standard_normal((50, 4))
    X[37, 2] = bad
    with pytest.raises(ValueError, match="row 37, column 2"):
        linear_cka(np.ones((50, 1)) * np.arange(50)[:, None], X, chunk_size=16)


def test_debiased_needs_four_rows():
    X = np.random.default_rng(9).standard_normal((3, 4))
    with pytest.raises(ValueError, match="at least 4 examples"):
        linear_cka(X, X, debiased=True)
    assert linear_cka(X, X) == pytest.approx(1.0)


@pytest.mark.parametrize("debiased", [False, True])
def test_zero_variance_input_raises_and_says_why(debiased):
    X = np.random.default_rng(10).standard_normal((20, 4))
    const = np.tile(np.array([[0.1, 0.2, 0.3]], dtype=np.float64), (20, 1))
    with pytest.raises(ValueError, match="Y has zero variance.*undefined"):
        linear_cka(X, const, debiased)
    with pytest.raises(ValueError, match="zero variance"):
        linear_cka_matrix([X, const], debiased=debiased)


def test_non_matrix_input_raises():
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(np.ones(5), np.ones(5))


# ---------------------------------------------------------------------------------------------------------------------
# minibatch and matrix forms
# ---------------------------------------------------------------------------------------------------------------------
def test_minibatch_cka_with_one_batch_is_the_debiased_value():
    X, Y = correlated(np.random.default_rng(11), 300, 10, 6)
    assert minibatch_cka(X, Y, batch_size=300) == pytest.approx(ref_linear_cka(X, Y, True), abs=1e-10)


def test_minibatch_cka_converges_to_the_debiased_value():
    rng = np.random.default_rng(12)
    X, Y = correlated(rng, 20_000, 32, 32)
    full = linear_cka(X, Y, debiased=True)
    assert minibatch_cka(X, Y, batch_size=512) == pytest.approx(full, abs=0.005)
    # the biased estimator averaged per batch would stay inflated; the minibatch one is far closer than it
    biased_batches = np.mean([linear_cka(X[i : i + 64], Y[i : i + 64]) for i in range(0, 6400, 64)])
    assert abs(minibatch_cka(X[:6400], Y[:6400], batch_size=64) - full) < abs(biased_batches - full)
    acc = MinibatchCKA()
    for i in range(0, 20_000, 4000):  # the streaming form gives the same as the array form
        acc.update(X[i : i + 4000], Y[i : i + 4000])
    assert acc.compute() == pytest.approx(minibatch_cka(X, Y, batch_size=4000), abs=1e-12)
    assert acc.compute() == pytest.approx(minibatch_cka(zip(np.split(X, 5), np.split(Y, 5))), abs=1e-12)
    assert acc.num_rows == 20_000


@pytest.mark.parametrize("n", [30, 400])  # Gram route (n <= d) and feature route
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_matrix_entries_equal_pairwise_reference(n, debiased):
    rng = np.random.default_rng(13)
    Xs = [rng.standard_normal((n, 40)), rng.standard_normal((n, 40))]
    Xs.append(Xs[0] @ rng.standard_normal((40, 50)) + 0.1 * rng.standard_normal((n, 50)))
    full = linear_cka_matrix(Xs, debiased=debiased)
    rect = linear_cka_matrix(Xs[:2], Xs, debiased=debiased)
    for i in range(3):
        for j in range(3):
            expected = ref_linear_cka(Xs[i], Xs[j], debiased)
            assert full[i, j] == pytest.approx(expected, abs=1e-9)
            if i < 2:
                assert rect[i, j] == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------------------------------------------------------------
# models: tiny offline BERT
# ---------------------------------------------------------------------------------------------------------------------
WORDS = "the a quick brown fox dog cat jumps runs over under lazy happy river tree house red blue green what where who".split()


def parallel_texts(n: int, seed: int = 0) -> dict[str, list[str]]:
    """Three synthetic 'languages': the same word sequence, word-reversed spelling, and a suffixed vocabulary."""
    rng = np.random.default_rng(seed)
    en = [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(n)]
    return {
        "en": en,
        "de": [" ".join(w[::-1] for w in s.split()) for s in en],
        "fr": [" ".join(w + "ux" for w in reversed(s.split())) for s in en],
    }


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    return parallel_texts(40)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, texts):
    from sentence_transformers_hybrid.testing import tiny_transformer_model

    return tiny_transformer_model(tmp_path_factory.mktemp("m0"), [t for v in texts.values() for t in v], seed=0)


@pytest.fixture(scope="module")
def tiny_model_b(tmp_path_factory, texts):
    from sentence_transformers_hybrid.testing import tiny_transformer_model

    return tiny_transformer_model(tmp_path_factory.mktemp("m1"), [t for v in texts.values() for t in v], seed=1)


def manual_hidden_states(model, texts: list[str], layer: int) -> np.ndarray:
    """Mean-pooled hidden state of one layer, computed with the HF tokenizer and model directly."""
    import torch

    hf, tok = model[0].auto_model, model[0].tokenizer
    hf.eval()  # no dropout
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hs = hf(**enc, output_hidden_states=True).hidden_states[layer]
    m = enc["attention_mask"].unsqueeze(-1).float()
    return ((hs * m).sum(1) / m.sum(1)).numpy()


def test_layer_embeddings_match_a_manual_forward_pass_and_encode(tiny_model, texts):
    embs = layer_embeddings(tiny_model, texts["en"], batch_size=7)
    assert len(embs) == 3  # embedding output + 2 blocks
    for layer in (0, 1):
        np.testing.assert_allclose(embs[layer], manual_hidden_states(tiny_model, texts["en"], layer), atol=1e-5)
    # the last layer, mean pooled, is what the model's Pooling(mean) returns
    np.testing.assert_allclose(embs[-1], tiny_model.encode(texts["en"]), atol=1e-5)
    only = layer_embeddings(tiny_model, texts["en"][:5], layers=[-1])
    np.testing.assert_allclose(only[0], embs[-1][:5], atol=1e-5)
    prompted = layer_embeddings(tiny_model, texts["en"][:5], layers=[-1], prompt="what where: ")
    np.testing.assert_allclose(prompted[0], tiny_model.encode(texts["en"][:5], prompt="what where: "), atol=1e-5)
    assert np.abs(prompted[0] - only[0]).max() > 1e-3
    with pytest.raises(ValueError, match="layer 3 does not exist"):
        layer_embeddings(tiny_model, texts["en"][:5], layers=[3])


def test_layerwise_cka_compares_the_same_layer_on_two_parallel_sets(tiny_model, texts):
    curve = layerwise_cka(tiny_model, texts["en"], texts["de"], batch_size=16)
    assert curve.shape == (3,)
    for layer in (0, 2):
        expected = ref_linear_cka(
            manual_hidden_states(tiny_model, texts["en"], layer),
            manual_hidden_states(tiny_model, texts["de"], layer),
            True,
        )
        assert curve[layer] == pytest.approx(expected, abs=1e-5)
    np.testing.assert_allclose(layerwise_cka(tiny_model, texts["en"], texts["en"]), 1.0, atol=1e-9)


def test_layerwise_cka_on_l2_normalised_hidden_states(tiny_model, texts):
    curve = layerwise_cka(tiny_model, texts["en"], texts["de"], batch_size=16, normalize=True)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    expected = ref_linear_cka(
        unit(manual_hidden_states(tiny_model, texts["en"], 2)), unit(manual_hidden_states(tiny_model, texts["de"], 2)), True
    )
    assert curve[2] == pytest.approx(expected, abs=1e-5)
    assert np.abs(curve - layerwise_cka(tiny_model, texts["en"], texts["de"], batch_size=16)).max() > 1e-6


def test_cka_matrix_between_two_models_layer_by_layer(tiny_model, tiny_model_b, texts):
    self_m = cka_matrix(tiny_model, None, texts["en"])
    assert self_m.shape == (3, 3)
    np.testing.assert_allclose(np.diag(self_m), 1.0, atol=1e-9)
    np.testing.assert_allclose(self_m, self_m.T, atol=1e-12)
    ab = cka_matrix(tiny_model, tiny_model_b, texts["en"], layers=[0, 2], debiased=False)
    assert ab.shape == (2, 2)
    expected = ref_linear_cka(
        manual_hidden_states(tiny_model, texts["en"], 2), manual_hidden_states(tiny_model_b, texts["en"], 0), False
    )
    assert ab[1, 0] == pytest.approx(expected, abs=1e-5)


def test_layerwise_helpers_need_a_transformer(texts):
    from sentence_transformers_hybrid.testing import tiny_static_model

    static = tiny_static_model(texts["en"])
    with pytest.raises(ValueError, match="Hugging Face transformer"):
        layer_embeddings(static, texts["en"][:4])


def test_heatmap_draws_and_saves(tmp_path):
    m = np.array([[1.0, 0.4], [0.4, 1.0]])
    path = tmp_path / "cka.png"
    fig = plot_cka_heatmap(m, ["en", "de"], ["en", "de"], path, title="CKA", origin="upper")
    ax = fig.axes[0]
    assert ax.get_title() == "CKA"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["en", "de"]
    assert sorted(t.get_text() for t in ax.texts) == ["0.40", "0.40", "1.00", "1.00"]
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="3 row_labels for 2 rows"):
        plot_cka_heatmap(m, ["a", "b", "c"])


# ---------------------------------------------------------------------------------------------------------------------
# CKAEvaluator
# ---------------------------------------------------------------------------------------------------------------------
def test_evaluator_figures_equal_linear_cka_of_encode_outputs(tiny_model, texts, tmp_path):
    ev = CKAEvaluator(texts, name="toy", batch_size=8)
    results = ev(tiny_model, output_path=str(tmp_path))
    assert sorted(results) == ["toy_cka_de_en", "toy_cka_de_fr", "toy_cka_en_fr", "toy_cka_mean"]
    emb = {lang: tiny_model.encode(t) for lang, t in texts.items()}
    for a, b in [("de", "en"), ("de", "fr"), ("en", "fr")]:
        assert results[f"toy_cka_{a}_{b}"] == pytest.approx(ref_linear_cka(emb[a], emb[b], True), abs=1e-6)
    pairs = [v for k, v in results.items() if not k.endswith("mean")]
    assert results["toy_cka_mean"] == pytest.approx(np.mean(pairs), abs=1e-12)
    assert ev.primary_metric == "toy_cka_mean" and ev.greater_is_better
    with open(tmp_path / "cka_evaluation_toy_results.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "steps", "cka_de_en", "cka_de_fr", "cka_en_fr", "cka_mean"]
    assert float(rows[1][-1]) == pytest.approx(results["toy_cka_mean"])


def test_evaluator_without_name_and_biased(tiny_model, texts):
    results = CKAEvaluator({"en": texts["en"], "de": texts["de"]}, debiased=False)(tiny_model)
    assert set(results) == {"cka_de_en", "cka_mean"}
    expected = ref_linear_cka(tiny_model.encode(texts["de"]), tiny_model.encode(texts["en"]), False)
    assert results["cka_de_en"] == pytest.approx(expected, abs=1e-6)


def test_evaluator_aligns_by_group_when_lists_differ(tiny_model, texts):
    aligned = CKAEvaluator(texts)(tiny_model)
    rng = np.random.default_rng(0)
    perm = rng.permutation(40)
    keep_fr = np.sort(rng.choice(40, size=30, replace=False))
    shuffled = {"en": texts["en"], "de": [texts["de"][i] for i in perm], "fr": [texts["fr"][i] for i in keep_fr]}
    groups = {"en": list(range(40)), "de": perm.tolist(), "fr": keep_fr.tolist()}
    grouped = CKAEvaluator(shuffled, groups=groups)(tiny_model)
    assert grouped["cka_de_en"] == pytest.approx(aligned["cka_de_en"], abs=1e-9)
    emb_en, emb_fr = tiny_model.encode(texts["en"]), tiny_model.encode(texts["fr"])
    expected = ref_linear_cka(emb_en[keep_fr], emb_fr[keep_fr], True)
    assert grouped["cka_en_fr"] == pytest.approx(expected, abs=1e-6)


def test_evaluator_rejects_non_parallel_lists_without_groups(texts):
    with pytest.raises(ValueError, match="parallel"):
        CKAEvaluator({"en": texts["en"], "de": texts["de"][:-1]})
    with pytest.raises(ValueError, match="at least 2 languages"):
        CKAEvaluator({"en": texts["en"]})


def test_evaluator_query_vs_passage(tiny_model, texts):
    passages = {lang: [s + " " + s for s in t] for lang, t in texts.items()}
    ev = CKAEvaluator(texts, name="qp", passages=passages, query_prompt="query: ", passage_prompt="passage: ")
    results = ev(tiny_model)
    q = tiny_model.encode_query(texts["en"], prompt="query: ")
    p = tiny_model.encode_document(passages["de"], prompt="passage: ")
    assert results["qp_cka_qp_en_de"] == pytest.approx(ref_linear_cka(q, p, True), abs=1e-6)
    mono = [results[f"qp_cka_qp_{x}_{x}"] for x in ("de", "en", "fr")]
    assert results["qp_cka_qp_mono_mean"] == pytest.approx(np.mean(mono), abs=1e-12)
    assert ev.last_query_passage_matrix.shape == (3, 3)


def fake_benchmark(texts: dict[str, list[str]], missing: dict[str, list[int]]) -> SimpleNamespace:
    """Duck-typed RetrievalBenchmark: question i of every language is group i, answer sentence = question + '!'."""
    splits = {}
    for lang, qs in texts.items():
        rows = [i for i in range(len(qs)) if i not in set(missing.get(lang, []))][::-1]  # reversed order on purpose
        splits[lang] = SimpleNamespace(
            questions=[qs[i] for i in rows],
            question_groups=np.array(rows, dtype=np.int64),
            sentences=[qs[i] + " !" for i in rows],
            paragraphs=[qs[i] + " ! more" for i in rows],
            sentence_paragraph=np.arange(len(rows), dtype=np.int64),
            answer_sentence=np.arange(len(rows), dtype=np.int64),
        )
    return SimpleNamespace(name="fake", languages=sorted(texts), group_ids=[str(i) for i in range(40)], splits=splits)


def test_from_benchmark_aligns_questions_by_group(tiny_model, texts):
    bench = fake_benchmark(texts, missing={"de": [0, 1, 2], "fr": [3]})
    ev = CKAEvaluator.from_benchmark(bench, passages="sentence", alignment="intersection")
    assert ev.name == "fake" and ev.alignment == "intersection"
    assert ev.sentences["en"] == [texts["en"][i] for i in range(4, 40)]  # groups present in every language
    assert ev.sentences["de"] == [texts["de"][i] for i in range(4, 40)]
    assert ev.passages["fr"][0] == texts["fr"][4] + " !"
    pairwise = CKAEvaluator.from_benchmark(bench, languages=["en", "fr"])  # auto: 39 shared < 100 -> pairwise
    assert pairwise.alignment == "pairwise"
    assert len(pairwise.sentences["en"]) == 40 and len(pairwise.sentences["fr"]) == 39
    res = pairwise(tiny_model)
    keep = [i for i in range(40) if i != 3]
    expected = ref_linear_cka(tiny_model.encode([texts["en"][i] for i in keep]),
                              tiny_model.encode([texts["fr"][i] for i in keep]), True)
    assert res["fake_cka_en_fr"] == pytest.approx(expected, abs=1e-6)
    a = CKAEvaluator.from_benchmark(bench, max_groups=10, seed=3, alignment="intersection")
    b = CKAEvaluator.from_benchmark(bench, max_groups=10, seed=3, alignment="intersection")
    assert a.sentences == b.sentences and len(a.sentences["en"]) == 10
    assert CKAEvaluator.from_benchmark(bench, min_intersection=30).alignment == "intersection"
    with pytest.raises(ValueError, match="no language"):
        CKAEvaluator.from_benchmark(bench, languages=["en", "xx"])


def test_evaluator_runs_inside_the_trainer(tmp_path, texts):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers 5.x
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    from sentence_transformers_hybrid.testing import tiny_transformer_model

    model = tiny_transformer_model(tmp_path / "m", [t for v in texts.values() for t in v], seed=2)
    ev = CKAEvaluator(texts, name="toy")
    before = ev(model)["toy_cka_mean"]
    train = Dataset.from_dict({"anchor": texts["en"][:16], "positive": texts["de"][:16]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8, report_to="none",
        learning_rate=1e-2, save_strategy="no", use_cpu=True, seed=0,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train, loss=MultipleNegativesRankingLoss(model), evaluator=ev
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert "eval_toy_cka_de_en" in metrics
    assert metrics["eval_toy_cka_mean"] == pytest.approx(ev(model)["toy_cka_mean"], abs=1e-9)
    assert metrics["eval_toy_cka_mean"] != pytest.approx(before, abs=1e-9)  # training changed the model


def test_from_benchmark_on_real_lareqa_aligns_the_same_question_ids(data_dir):
    from sentence_transformers_hybrid.data import load_lareqa

    bench = load_lareqa("mlqa-r", data_dir=data_dir, languages=["ar", "de", "en"])
    ids = {lang: bench.splits[lang].question_ids for lang in bench.languages}
    qrow = {lang: {q: i for i, q in enumerate(bench.splits[lang].questions)} for lang in bench.languages}

    def ids_of(ev, lang, rows):
        return [ids[lang][qrow[lang][ev.sentences[lang][r]]] for r in rows]

    inter = CKAEvaluator.from_benchmark(bench, alignment="intersection")
    n = len(inter.sentences["en"])
    assert 4 <= n < min(len(v) for v in ids.values())
    assert ids_of(inter, "ar", range(n)) == ids_of(inter, "en", range(n)) == ids_of(inter, "de", range(n))
    pair = CKAEvaluator.from_benchmark(bench, min_intersection=10**6)
    assert pair.alignment == "pairwise"
    ia, ib = pair._pair_rows[("ar", "en")]
    assert len(ia) > n and ids_of(pair, "ar", ia) == ids_of(pair, "en", ib)
