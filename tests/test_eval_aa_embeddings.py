"""PCA and exact t-SNE on known data, the amino-acid classes, and `esm-jax eval aa-embeddings` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esm_jax import build_model
from esm_jax.alphabet import STANDARD_AMINO_ACIDS
from eval.cli import main
from eval.common.pca import pca
from eval.common.tsne import conditional_probabilities, squared_distances, tsne
from eval.language_model import aa_embeddings
from tests.eval_tiny_model import TINY, assert_summarised, save_tiny_checkpoint


def test_pca_of_points_on_a_line_has_one_component():
    direction = np.array([3.0, 4.0, 0.0]) / 5.0
    data = np.outer(np.arange(-3, 4), direction) + 10.0
    result = pca(data, 2)
    np.testing.assert_allclose(result.explained, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(result.components[0]), direction, atol=1e-12)
    np.testing.assert_allclose(np.abs(result.points[:, 0]), np.abs(np.arange(-3, 4)), atol=1e-12)


def test_pca_matches_the_covariance_eigenvectors_with_a_fixed_sign():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((50, 4)) * [5.0, 2.0, 1.0, 0.5]
    result = pca(data, 2)
    values, vectors = np.linalg.eigh(np.cov(data.T))
    np.testing.assert_allclose(result.explained, values[::-1][:2] / values.sum(), rtol=1e-10)
    for k in range(2):
        assert abs(abs(result.components[k] @ vectors[:, -1 - k]) - 1.0) < 1e-10
        assert result.components[k][np.argmax(np.abs(result.components[k]))] > 0
    np.testing.assert_allclose(pca(-data, 2).points, -result.points, atol=1e-10)  # signs do not flip


def test_pca_rejects_bad_shapes():
    with pytest.raises(ValueError, match="components"):
        pca(np.ones((5, 3)), 4)
    with pytest.raises(ValueError, match="PCA needs"):
        pca(np.ones(5), 1)


def test_tsne_bandwidths_reach_the_requested_perplexity():
    data = np.random.default_rng(1).standard_normal((20, 6))
    rows = conditional_probabilities(squared_distances(data), perplexity=5.0)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    entropy = -np.sum(np.where(rows > 0, rows * np.log(np.where(rows > 0, rows, 1.0)), 0.0), axis=1)
    np.testing.assert_allclose(np.exp(entropy), 5.0, rtol=1e-3)
    assert np.all(np.diag(rows) == 0)


def test_tsne_keeps_separated_clusters_apart_and_is_deterministic():
    rng = np.random.default_rng(2)
    centres = np.array([[0.0] * 5, [20.0] * 5, [-20.0, 20.0, 0.0, 0.0, 0.0]])
    data = np.concatenate([centre + rng.standard_normal((7, 5)) for centre in centres])
    result = tsne(data, perplexity=4.0, seed=0)
    cluster = np.repeat([0, 1, 2], 7)
    distances = squared_distances(result.points)
    np.fill_diagonal(distances, np.inf)
    assert np.all(cluster[np.argmin(distances, axis=1)] == cluster)
    assert result.kl_divergence < 0.5
    np.testing.assert_array_equal(tsne(data, perplexity=4.0, seed=0).points, result.points)


def test_tsne_rejects_impossible_perplexity():
    with pytest.raises(ValueError, match="perplexity"):
        tsne(np.ones((5, 2)), perplexity=10.0)


def test_every_standard_amino_acid_has_exactly_one_class():
    letters = "".join(aa_embeddings.AMINO_ACID_CLASSES.values())
    assert sorted(letters) == sorted(STANDARD_AMINO_ACIDS)


def test_nearest_class_agreement_on_hand_made_rows():
    rows = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    agreement, chance = aa_embeddings.nearest_class_agreement(rows, ["x", "x", "y", "y"])
    assert agreement == 1.0 and chance == pytest.approx(1 / 3)
    agreement, _ = aa_embeddings.nearest_class_agreement(rows, ["x", "y", "x", "y"])
    assert agreement == 0.0


def test_rows_are_the_tied_output_embedding_of_each_amino_acid():
    model = build_model(TINY, seed=4)
    rows = aa_embeddings.amino_acid_rows(model)
    table = np.asarray(model.embed_tokens.embedding[...])
    np.testing.assert_array_equal(rows[STANDARD_AMINO_ACIDS.index("L")], table[4])  # 'L' is token 4
    assert rows.shape == (20, TINY.embed_dim)


def test_aa_embeddings_task_end_to_end(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path)
    assert main(["aa-embeddings", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "aa-embeddings.json").read_text())
    assert_summarised("aa-embeddings", results, tmp_path / "out")
    assert sorted(results["tsne_points"]) == sorted(STANDARD_AMINO_ACIDS)
    assert 0.0 <= results["nearest_class_agreement"] <= 1.0
    per_amino_acid = results["per_item"][aa_embeddings.NEAREST_IN_CLASS]
    assert sorted(per_amino_acid) == sorted(STANDARD_AMINO_ACIDS) and set(per_amino_acid.values()) <= {0.0, 1.0}
    assert np.mean(list(per_amino_acid.values())) == pytest.approx(results["nearest_class_agreement"])
    for name in ("aa-embeddings-pca.png", "aa-embeddings-tsne.png", "aa-embeddings.md"):
        assert (tmp_path / "out" / name).stat().st_size > 0
