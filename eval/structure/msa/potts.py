"""A Potts model fitted by pseudo-likelihood on an MSA, scored as CCMpred does: APC-corrected coupling norms.

Model: ``P(x) ∝ exp(Σ_i h_i(x_i) + Σ_{i<j} J_ij(x_i, x_j))`` over ``q`` states. Fitting maximises the weighted
pseudo-log-likelihood ``Σ_n w_n Σ_i log P(x_ni | x_n,\\i)`` with CCMpred's L2 penalties ``λ_h ‖h‖²`` and
``λ_J ‖J‖²`` where ``λ_J = 0.2 (L - 1)`` (Seemayer, Gruber & Söding, Bioinformatics 2014; Balakrishnan et al.,
Proteins 2011; Ekeberg et al., PRE 2013), by L-BFGS on the full alignment, jitted in JAX. The contact score of
``i, j`` is the Frobenius norm of ``J_ij`` over the amino-acid states (the gap state left out), corrected by the
average product (Dunn et al., Bioinformatics 2008).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from esm_jax.inference.batching import bucket_width
from esm_jax.model.heads import average_product_correct
from eval.structure.msa.features import GAP, STATES, one_hot


@dataclasses.dataclass(frozen=True)
class PottsModel:
    """Fields ``(L, q)`` and symmetric couplings ``(L, q, L, q)`` with zero diagonal blocks."""

    fields: np.ndarray
    couplings: np.ndarray


def _symmetric(raw: jax.Array, mask: jax.Array) -> jax.Array:
    return 0.5 * (raw + jnp.transpose(raw, (2, 3, 0, 1))) * mask


def _masks(length: int, width: int, states: int) -> tuple[jax.Array, jax.Array]:
    """Real-column mask (width,) and coupling mask (width, q, width, q): real pairs, no diagonal blocks."""
    columns = (jnp.arange(width) < length).astype(jnp.float32)
    pairs = columns[:, None] * columns[None, :] * (1.0 - jnp.eye(width, dtype=jnp.float32))
    return columns, jnp.broadcast_to(pairs[:, None, :, None], (width, states, width, states))


def negative_pseudo_log_likelihood(
    params: dict, encoded: jax.Array, weights: jax.Array, pair_mask: jax.Array, columns: jax.Array
) -> jax.Array:
    """``-Σ_n w_n Σ_i log P(x_ni | rest)`` for one-hot ``encoded`` (N, L, q), over the real ``columns`` (1/0)."""
    couplings = _symmetric(params["couplings"], pair_mask)
    count, length, states = encoded.shape
    flat = encoded.reshape(count, length * states)
    local = params["fields"][None] + (flat @ couplings.reshape(length * states, length * states).T).reshape(
        count, length, states
    )
    per_position = jnp.sum(jax.nn.log_softmax(local, axis=-1) * encoded, axis=-1) * columns[None]
    return -jnp.sum(weights[:, None] * per_position)


def _objective(params, encoded, weights, pair_mask, columns, lambdas):
    couplings = _symmetric(params["couplings"], pair_mask)
    penalty = lambdas[0] * jnp.sum(params["fields"] ** 2) + 0.5 * lambdas[1] * jnp.sum(couplings**2)
    return negative_pseudo_log_likelihood(params, encoded, weights, pair_mask, columns) + penalty


_SOLVER = optax.lbfgs()


@jax.jit
def _step(params, state, encoded, weights, pair_mask, columns, lambdas):
    def objective(p):
        return _objective(p, encoded, weights, pair_mask, columns, lambdas)

    value, grad = optax.value_and_grad_from_state(objective)(params, state=state)
    updates, state = _SOLVER.update(grad, state, params, value=value, grad=grad, value_fn=objective)
    return optax.apply_updates(params, updates), state, value, optax.tree.norm(grad)


def fit_potts(
    msa: np.ndarray,
    weights: np.ndarray,
    *,
    states: int = STATES,
    lambda_fields: float = 0.01,
    lambda_couplings: float | None = None,
    iterations: int = 200,
    tolerance: float = 1e-5,
) -> PottsModel:
    """Fit fields and couplings to an integer MSA ``(N, L)`` with row ``weights`` (N,) by L-BFGS.

    The alignment is padded to a ladder of widths (extra columns masked out of the likelihood and the couplings,
    extra rows with weight 0), so families of similar size share one compiled step; the fit is that of the
    unpadded alignment.
    """
    msa = np.asarray(msa)
    count, length = msa.shape
    if weights.shape != (count,):
        raise ValueError(f"weights have shape {weights.shape}, expected ({count},)")
    if msa.min() < 0 or msa.max() >= states:
        raise ValueError(f"MSA states must lie in 0..{states - 1}")
    width, rows = bucket_width(length, smallest=16), 1 << max(0, count - 1).bit_length()
    padded = np.zeros((rows, width), dtype=np.int32)
    padded[:count, :length] = msa
    encoded = one_hot(padded, states)
    row_weights = jnp.zeros(rows, jnp.float32).at[:count].set(jnp.asarray(weights, jnp.float32))
    columns, pair_mask = _masks(length, width, states)
    lambda_couplings = 0.2 * (length - 1) if lambda_couplings is None else lambda_couplings
    lambdas = jnp.array([lambda_fields, lambda_couplings], jnp.float32)
    frequencies = (jnp.einsum("n,nls->ls", row_weights, encoded) + 0.1) / (row_weights.sum() + 0.1 * states)
    params = {
        "fields": jnp.log(frequencies) * columns[:, None],
        "couplings": jnp.zeros((width, states, width, states), jnp.float32),
    }
    state, previous = _SOLVER.init(params), np.inf
    for _ in range(iterations):
        params, state, value, gradient_norm = _step(params, state, encoded, row_weights, pair_mask, columns, lambdas)
        value = float(value)
        if abs(previous - value) <= tolerance * max(1.0, abs(value)) or float(gradient_norm) < tolerance:
            break
        previous = value
    couplings = np.asarray(_symmetric(params["couplings"], pair_mask))[:length, :, :length]
    return PottsModel(np.asarray(params["fields"])[:length], couplings)


def coupling_scores(model: PottsModel, gap_state: int | None = GAP) -> np.ndarray:
    """``(L, L)`` Frobenius norms of the couplings over non-gap states, APC-corrected (zero diagonal)."""
    couplings = model.couplings
    if gap_state is not None:
        keep = np.array([s for s in range(couplings.shape[1]) if s != gap_state])
        couplings = couplings[:, keep][:, :, :, keep]
    norms = np.sqrt(np.sum(couplings.astype(np.float64) ** 2, axis=(1, 3)))
    np.fill_diagonal(norms, 0.0)
    norms = np.array(average_product_correct(jnp.asarray(norms)), dtype=np.float64)
    np.fill_diagonal(norms, 0.0)
    return norms
