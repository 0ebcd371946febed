"""From logical axis names on parameters to shardings on a device mesh.

Every model variable carries logical axis names (``layers``, ``vocab``, ``positions``,
``embed``, ``heads``, ``mlp``, ``embed_out``); a rules table maps each name to a mesh axis
(``data``, ``fsdp``, ``tensor``) or to ``None`` (replicated). Configurations hold their own
table; :data:`DEFAULT_RULES` is FSDP over the model width plus tensor parallelism over heads
and the MLP, with the 33-token vocabulary never split.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LOGICAL_AXES = ("layers", "vocab", "positions", "embed", "heads", "mlp", "embed_out")
# Mesh axes that split examples (data parallelism and fully sharded data parallelism).
BATCH_AXES = ("data", "fsdp")
DEFAULT_RULES: dict[str, str | tuple[str, ...] | None] = {
    "layers": None,
    "vocab": None,
    "positions": None,
    "embed": "fsdp",
    "heads": "tensor",
    "mlp": "tensor",
    "embed_out": "tensor",
}


def logical_axes(variable: nnx.Variable) -> tuple[str | None, ...]:
    """The logical axis names of ``variable`` (one per dimension); scalars need none."""
    names = variable.get_metadata().get("out_sharding")
    if names is None and len(variable.shape) == 0:
        return ()
    if names is None or len(names) != len(variable.shape):
        raise ValueError(f"variable of shape {variable.shape} has no logical axis names per dimension: {names}")
    return tuple(names)


def _mesh_axis_size(mesh: Mesh, axes: str | tuple[str, ...] | None) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    size = 1
    for axis in axes:
        size *= mesh.shape[axis]
    return size


def partition_spec(
    names: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh, rules: Mapping[str, object], where: str
) -> PartitionSpec:
    """Map logical ``names`` to a :class:`PartitionSpec`, refusing dimensions the mesh cannot split."""
    spec = []
    for name, size in zip(names, shape, strict=True):
        if name is not None and name not in rules:
            raise ValueError(f"{where}: logical axis {name!r} has no sharding rule; known rules: {sorted(rules)}")
        axes = None if name is None else rules[name]
        parts = _mesh_axis_size(mesh, axes)
        if size % parts:
            raise ValueError(
                f"{where}: dimension {name!r} of size {size} cannot be split over mesh axes {axes} "
                f"of total size {parts}; change the mesh shape or the sharding rules"
            )
        spec.append(axes)
    return PartitionSpec(*spec)


def state_shardings(state: nnx.State, mesh: Mesh, rules: Mapping[str, object] = DEFAULT_RULES) -> nnx.State:
    """A :class:`NamedSharding` for every variable of ``state``, derived from its logical axes."""

    def sharding_of(path, variable):
        where = "/".join(str(part) for part in path)
        spec = partition_spec(logical_axes(variable), variable.shape, mesh, rules, where)
        return NamedSharding(mesh, spec)

    return nnx.map_state(sharding_of, state)


def with_shardings(state: nnx.State, shardings: nnx.State) -> nnx.State:
    """Shape-only ``state`` whose leaves also carry their target shardings (for restoring)."""

    def attach(variable: nnx.Variable, sharding) -> nnx.Variable:
        return variable.replace(jax.ShapeDtypeStruct(variable.shape, variable.dtype, sharding=sharding))

    return jax.tree.map(attach, state, shardings, is_leaf=lambda x: isinstance(x, nnx.Variable))


def constrain_batch(x: jax.Array) -> jax.Array:
    """Pin ``x``'s leading (example) axis to the mesh's batch axes, when a mesh is in context.

    Without such anchors GSPMD may choose to replicate activations across an FSDP mesh. Outside
    ``jax.set_mesh`` (single device, plain inference) this is the identity.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
        return x
    return jax.lax.with_sharding_constraint(x, PartitionSpec(BATCH_AXES, *(None,) * (x.ndim - 1)))


def shard_model(model: nnx.Module, mesh: Mesh, rules: Mapping[str, object] = DEFAULT_RULES) -> nnx.Module:
    """Place ``model``'s variables on ``mesh`` according to ``rules`` (in place) and return it.

    A model that runs batches itself (an ESM's ``model(tokens)``, ``embed``) then splits every batch's
    rows over the mesh's batch axes, padding the row count to a multiple of them.
    """
    state = nnx.state(model)
    shardings = state_shardings(state, mesh, rules)
    nnx.update(model, jax.device_put(state, shardings))
    if hasattr(model, "mesh"):
        model.mesh = mesh
    return model
