"""Probes and deep heads give each protein the same outputs however it is padded and batched; none is dropped."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from eval.common.deep_heads import DilatedResNet, NetSurfPHead
from eval.common.linear_probes import BilinearContactProbe, bilinear_forward, contact_pair_mask
from eval.common.probe_training import protein_batches
from eval.common.seeds import formatted, mean_sd
from eval.structure.contacts.deep_runs import ResNetOptions, resnet_runs
from eval.structure.contacts.metrics import random_ranking_precisions
from eval.structure.contacts.plans import Plan
from eval.structure.contacts.sets import ContactProtein
from eval.structure.contacts.training import contact_batches, predict
from eval.structure.msa.features import one_hot_features


def _padded(x: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((1, width, *x.shape[1:]), np.float32)
    out[0, : len(x)] = x
    return out


def test_netsurfp_head_ignores_padding():
    head = NetSurfPHead(6, hidden=4, kernels=(5, 9), rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(13, 6)).astype(np.float32)
    alone8, alone3 = head(jnp.asarray(x[None]), jnp.ones((1, 13), bool))
    present = np.zeros((1, 32), bool)
    present[0, :13] = True
    padded8, padded3 = head(jnp.asarray(_padded(x, 32)), jnp.asarray(present))
    assert np.allclose(alone8[0], padded8[0, :13], atol=1e-5)
    assert np.allclose(alone3[0], padded3[0, :13], atol=1e-5)


def test_resnet_and_bilinear_probe_ignore_padding_and_are_symmetric():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(11, 6)).astype(np.float32)
    pair = rng.normal(size=(11, 11, 2)).astype(np.float32)
    resnet = DilatedResNet(6, pair_features=2, channels=8, blocks=2, rngs=nnx.Rngs(0))
    alone = np.asarray(resnet(jnp.asarray(x[None]), jnp.ones((1, 11), bool), jnp.asarray(pair[None])))[0]
    present = np.zeros((1, 24), bool)
    present[0, :11] = True
    padded_pair = np.zeros((1, 24, 24, 2), np.float32)
    padded_pair[0, :11, :11] = pair
    padded = np.asarray(resnet(jnp.asarray(_padded(x, 24)), jnp.asarray(present), jnp.asarray(padded_pair)))[0]
    assert np.allclose(alone, padded[:11, :11], atol=1e-5)
    assert np.allclose(alone, alone.T)
    probe = BilinearContactProbe(6, 3, rngs=nnx.Rngs(0))
    logits = np.asarray(probe(jnp.asarray(x[None])))[0]
    assert np.allclose(logits, np.asarray(probe(jnp.asarray(_padded(x, 24))))[0, :11, :11], atol=1e-6)
    assert np.allclose(logits, logits.T)


def test_pair_mask_keeps_valid_pairs_six_apart():
    valid = np.ones((1, 10), bool)
    valid[0, 9] = False
    mask = np.asarray(contact_pair_mask(jnp.asarray(valid)))[0]
    assert mask[0, 6] == 1 and mask[0, 5] == 0 and mask[6, 0] == 0 and mask[2, 9] == 0
    assert mask.sum() == sum(1 for i in range(9) for j in range(9) if j - i >= 6)


def test_every_protein_is_batched_and_predicted_once():
    lengths = [5, 70, 12, 130, 64, 63, 7]
    seen = [i for indices, rows, width in protein_batches(lengths, 256) for i in indices]
    assert sorted(seen) == list(range(len(lengths)))
    for indices, rows, width in protein_batches(lengths, 256):
        assert rows >= len(indices) and all(lengths[i] <= width for i in indices)
    rng = np.random.default_rng(0)
    proteins = [
        ContactProtein(f"p{i}", "A" * n, rng.random((n, n)) < 0.1, np.ones(n, bool)) for i, n in enumerate(lengths)
    ]
    features = [rng.normal(size=(n, 4)).astype(np.float32) for n in lengths]
    probe = BilinearContactProbe(4, 2, rngs=nnx.Rngs(0))
    batches = contact_batches(proteins, features, list(range(len(lengths))), tokens_per_batch=256)
    out = predict(probe, bilinear_forward, batches, {i: n for i, n in enumerate(lengths)})
    assert sorted(out) == list(range(len(lengths)))
    for i, n in enumerate(lengths):
        alone = 1 / (1 + np.exp(-np.asarray(probe(jnp.asarray(features[i][None])))[0]))
        assert out[i].shape == (n, n) and np.allclose(out[i], alone, atol=1e-5)


def test_mean_and_sd_over_seeds():
    summary = mean_sd([{"Q8": 0.5}, {"Q8": 0.7}, {"Q8": 0.6}])
    assert summary["Q8"]["mean"] == 0.6
    assert np.isclose(summary["Q8"]["sd"], 0.1)


def _planted_rule_plan(proteins: int = 8, length: int = 48) -> tuple[Plan, list[np.ndarray]]:
    """Random proteins whose residues touch exactly when both are hydrophobic (and 6+ apart), with one-hot features."""
    rng = np.random.default_rng(0)
    alphabet, hydrophobic = np.array(list("ACDEFGHIKLMNPQRSTVWY")), set("AILMFVW")
    made, features = [], []
    for index in range(proteins):
        sequence = "".join(rng.choice(alphabet, size=length))
        buried = np.array([residue in hydrophobic for residue in sequence])
        separation = np.abs(np.subtract.outer(np.arange(length), np.arange(length)))
        contacts = np.outer(buried, buried) & (separation >= 6)
        made.append(ContactProtein(f"p{index}", sequence, contacts, np.ones(length, bool)))
        features.append(one_hot_features(sequence))
    half = np.arange(proteins) < proteins // 2
    folds = [(np.flatnonzero(half), np.flatnonzero(~half)), (np.flatnonzero(~half), np.flatnonzero(half))]
    return Plan("planted", made, folds, "two halves"), features


def test_deep_contact_head_learns_a_pairwise_rule_at_its_default_size():
    """The default head (size, steps, learning rate) must learn: far above a random ranking of pairs."""
    plan, features = _planted_rule_plan()
    summary, per_protein = resnet_runs(plan, features, ResNetOptions(seeds=1))
    learned = summary["long P@L"]["mean"]
    assert set(per_protein) == {p.name for p in plan.proteins}
    assert np.mean(list(per_protein.values())) == pytest.approx(learned)
    chance = random_ranking_precisions(plan.tested_proteins)["long P@L"]
    assert chance < 0.2 and learned > 0.5


def test_a_single_seed_reports_no_spread():
    summary = mean_sd([{"Q8": 0.5}])
    assert summary["Q8"]["mean"] == 0.5 and np.isnan(summary["Q8"]["sd"])
    assert formatted(summary, "Q8") == "0.5000 (1 seed)"
    assert formatted(mean_sd([{"Q8": 0.5}, {"Q8": 0.7}]), "Q8") == "0.6000 ± 0.1414"
