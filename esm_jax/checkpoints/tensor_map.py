"""Move tensors between an :class:`~esm_jax.model.esm.ESM` and a flat ``name → tensor`` mapping.

Each external format (fair-esm, Hugging Face) is described by a list of :class:`TensorSlot`
entries; this module does the shared work of stacking per-layer tensors, transposing
``torch.nn.Linear`` weights and checking every shape.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from esm_jax.errors import CheckpointError
from esm_jax.model import ESM, ModelConfig, abstract_model
from esm_jax.sharding import state_shardings


@dataclasses.dataclass(frozen=True)
class TensorSlot:
    """One model variable and where it lives in an external checkpoint.

    ``name`` contains ``{layer}`` for variables stacked over Transformer blocks; ``transpose``
    marks ``torch.nn.Linear`` weights, stored (out, in) where esm-jax keeps (in, out).
    """

    path: tuple[str, ...]
    name: str
    transpose: bool = False

    @property
    def per_layer(self) -> bool:
        return "{layer}" in self.name

    def names(self, num_layers: int) -> list[str]:
        if self.per_layer:
            return [self.name.format(layer=i) for i in range(num_layers)]
        return [self.name]


def linear_slots(path: tuple[str, ...], name: str) -> list[TensorSlot]:
    """A ``torch.nn.Linear`` called ``name`` (weight stored transposed) and the Dense layer at ``path``."""
    return [
        TensorSlot((*path, "kernel"), f"{name}.weight", transpose=True),
        TensorSlot((*path, "bias"), f"{name}.bias"),
    ]


def layer_norm_slots(path: tuple[str, ...], name: str) -> list[TensorSlot]:
    """A ``torch.nn.LayerNorm`` called ``name`` and the LayerNorm at ``path``."""
    return [TensorSlot((*path, "scale"), f"{name}.weight"), TensorSlot((*path, "bias"), f"{name}.bias")]


def as_numpy(tensor: Any) -> np.ndarray:
    """Materialise a lazy checkpoint tensor (anything with ``.numpy()``) or an array."""
    return tensor if isinstance(tensor, np.ndarray) else tensor.numpy()


def tensor_shape(tensor: Any) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _is_float_dtype(dtype: Any) -> bool:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        return False
    return dtype.kind == "f" or dtype == np.dtype(ml_dtypes.bfloat16)


def _checked_shape(tensor: Any, name: str, source: str) -> tuple[int, ...]:
    """The shape of a checkpoint tensor, refusing values that are not floating-point tensors."""
    if not (hasattr(tensor, "shape") and (isinstance(tensor, np.ndarray) or hasattr(tensor, "numpy"))):
        raise CheckpointError(
            f"{source}: {name!r} is a {type(tensor).__name__}, not a tensor; the file is not a model checkpoint"
        )
    if not _is_float_dtype(getattr(tensor, "dtype", None)):
        raise CheckpointError(
            f"{source}: tensor {name!r} has dtype {tensor.dtype}, but model weights are floating point; "
            "the file is corrupted or not a model checkpoint"
        )
    return tensor_shape(tensor)


def _expected_external_shape(shape: tuple[int, ...], slot: TensorSlot) -> tuple[int, ...]:
    shape = shape[1:] if slot.per_layer else shape
    return tuple(reversed(shape)) if slot.transpose else shape


def check_shapes(
    pure_state: Mapping, slots: Iterable[TensorSlot], tensors: Mapping[str, Any], num_layers: int, source: str
) -> None:
    """Raise :class:`CheckpointError` naming the first missing tensor or shape mismatch."""
    for slot in slots:
        expected = _expected_external_shape(_lookup(pure_state, slot.path).shape, slot)
        for name in slot.names(num_layers):
            if name not in tensors:
                raise CheckpointError(f"{source}: tensor {name!r} is missing from the checkpoint")
            found = _checked_shape(tensors[name], name, source)
            if found != expected:
                raise CheckpointError(
                    f"{source}: tensor {name!r} has shape {found} but the model described by the "
                    f"checkpoint's configuration needs {expected}"
                )


def _lookup(tree: Mapping, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _leaves(tree: Mapping, prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _store(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def load_into(
    model: nnx.Module,
    slots: list[TensorSlot],
    tensors: Mapping[str, Any],
    num_layers: int,
    source: str,
    on_tensor: Callable[[str], None] = lambda name: None,
    mesh: Mesh | None = None,
) -> None:
    """Copy ``tensors`` into ``model`` (float32), after checking every name and shape.

    With a ``mesh`` each tensor goes straight into its shards (:data:`~esm_jax.sharding.DEFAULT_RULES`),
    one checkpoint tensor at a time: neither the host nor any device ever holds the whole model.
    """
    state = nnx.state(model)
    pure = nnx.to_pure_dict(state)
    check_shapes(pure, slots, tensors, num_layers, source)
    shardings = None if mesh is None else nnx.to_pure_dict(state_shardings(state, mesh))
    for slot in slots:
        sharding = None if shardings is None else _lookup(shardings, slot.path)
        _store(pure, slot.path, _read_slot(slot, tensors, num_layers, source, on_tensor, sharding))
    unfilled = [path for path, leaf in _leaves(pure) if isinstance(leaf, jax.ShapeDtypeStruct)]
    if unfilled:
        raise CheckpointError(f"{source}: no tensor maps to model variables {unfilled[:5]}")
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    if mesh is not None and hasattr(model, "mesh"):
        model.mesh = mesh


def _read_slot(
    slot: TensorSlot,
    tensors: Mapping[str, Any],
    num_layers: int,
    source: str,
    on_tensor: Callable[[str], None],
    sharding: NamedSharding | None,
) -> jax.Array:
    """One variable from its checkpoint tensors (one per layer when stacked), on the host or into ``sharding``."""
    layer_sharding = sharding
    if sharding is not None and slot.per_layer:
        layer_sharding = NamedSharding(sharding.mesh, PartitionSpec(*sharding.spec[1:]))
    parts = []
    for name in slot.names(num_layers):
        array = as_numpy(tensors[name]).astype(np.float32, copy=False)
        if not np.all(np.isfinite(array)):
            raise CheckpointError(f"{source}: tensor {slot.name!r} contains NaN or infinite values")
        array = array.T if slot.transpose else array
        parts.append(array if sharding is None else jax.device_put(array, layer_sharding))
        on_tensor(name)
    if sharding is None:
        return jnp.asarray(np.stack(parts) if slot.per_layer else parts[0])
    return _stack_into(sharding)(*parts) if slot.per_layer else parts[0]


@functools.cache
def _stack_into(sharding: NamedSharding) -> Callable[..., jax.Array]:
    return jax.jit(lambda *parts: jnp.stack(parts), out_shardings=sharding)


def build_from_tensors(
    config: ModelConfig,
    slots: list[TensorSlot],
    tensors: Mapping[str, Any],
    source: str,
    on_tensor: Callable[[str], None] = lambda name: None,
    mesh: Mesh | None = None,
) -> ESM:
    """A model of ``config`` whose variables all come from ``tensors``, without random init.

    With a ``mesh`` the model is built into its shards and runs its batches split over the mesh.
    """
    model = abstract_model(config)
    load_into(model, slots, tensors, config.num_layers, source, on_tensor, mesh)
    return model


def blank_contact_regression(config: ModelConfig, contact_slots: list[TensorSlot]) -> dict[str, np.ndarray]:
    """Zero contact-regression tensors for checkpoints released without them (e.g. ESM-1v)."""
    weight, bias = contact_slots
    return {
        weight.name: np.zeros((1, config.num_layers * config.attention_heads), np.float32),
        bias.name: np.zeros((1,), np.float32),
    }


def export_from(model: nnx.Module, slots: list[TensorSlot], num_layers: int) -> dict[str, np.ndarray]:
    """The model's variables under their external names, as contiguous float32 arrays."""
    pure = nnx.to_pure_dict(nnx.state(model))
    out: dict[str, np.ndarray] = {}
    for slot in slots:
        value = np.asarray(_lookup(pure, slot.path), dtype=np.float32)
        for i, name in enumerate(slot.names(num_layers)):
            part = value[i] if slot.per_layer else value
            out[name] = np.ascontiguousarray(part.T if slot.transpose else part)
    return out
