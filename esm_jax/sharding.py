"""From logical axis names on parameters and activations to shardings on a device mesh.

Every model variable carries logical axis names (``layers``, ``vocab``, ``positions``,
``embed``, ``heads``, ``mlp``, ``embed_out``), and the model pins its activations with
:func:`constrain` under names of their own (``activation_batch``, ``activation_length``,
``activation_embed``). One rules table maps each name to a mesh axis (``data``, ``fsdp``,
``tensor``), a tuple of them, or ``None`` (replicated). Configurations hold their own table;
:data:`DEFAULT_RULES` is FSDP over the model width plus tensor parallelism over heads and the
MLP, with the 33-token vocabulary never split and activations split by example over ``data`` ×
``fsdp``. Activation constraints follow the table of the enclosing :func:`axis_rules` context (a
trainer enters its configuration's), :data:`DEFAULT_RULES` outside one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PARAMETER_AXES = ("layers", "vocab", "positions", "embed", "heads", "mlp", "embed_out")
ACTIVATION_AXES = ("activation_batch", "activation_length", "activation_embed")
# The logical axes of per-token arrays (rows, tokens) and of hidden states (rows, tokens, features).
ROW_AXES = ("activation_batch", "activation_length")
HIDDEN_AXES = (*ROW_AXES, "activation_embed")
# Every name a rules table maps.
LOGICAL_AXES = PARAMETER_AXES + ACTIVATION_AXES
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
    "activation_batch": BATCH_AXES,
    "activation_length": None,
    "activation_embed": None,
}
# The rules table (name, mesh axes) pairs of the innermost axis_rules context; None outside any.
_ACTIVE_RULES = jax.make_user_context(default_value=None)


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


def mesh_axes(name: str | None, rules: Mapping[str, object], where: str) -> str | tuple[str, ...] | None:
    """The mesh axes ``rules`` give the logical axis ``name`` (None: not split); unknown names are refused."""
    if name is None:
        return None
    if name not in rules:
        raise ValueError(f"{where}: logical axis {name!r} has no sharding rule; known rules: {sorted(rules)}")
    axes = rules[name]
    return tuple(axes) if isinstance(axes, list) else axes  # a table read back from JSON holds lists


def partition_spec(
    names: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh, rules: Mapping[str, object], where: str
) -> PartitionSpec:
    """Map logical ``names`` to a :class:`PartitionSpec`, refusing dimensions the mesh cannot split."""
    spec = []
    for name, size in zip(names, shape, strict=True):
        axes = mesh_axes(name, rules, where)
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


@contextlib.contextmanager
def axis_rules(rules: Mapping[str, object]) -> Iterator[None]:
    """Make ``rules`` the table that :func:`constrain` follows inside this context.

    The table is part of ``jax.jit``'s cache key (a JAX user context), so a function already compiled
    under another table is traced again rather than keeping that table's constraints.
    """
    with _ACTIVE_RULES(tuple((name, mesh_axes(name, rules, "axis_rules")) for name in rules)):
        yield


def active_rules() -> Mapping[str, object]:
    """The table of the innermost :func:`axis_rules` context, :data:`DEFAULT_RULES` outside any."""
    pairs = _ACTIVE_RULES.value
    return DEFAULT_RULES if pairs is None else dict(pairs)


def _named_axes(spec: tuple[str | tuple[str, ...] | None, ...]) -> set[str]:
    return {axis for axes in spec if axes is not None for axis in ((axes,) if isinstance(axes, str) else axes)}


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """Pin ``x``'s dimensions, named by logical ``names``, to the mesh axes the active rules give them.

    Without such anchors GSPMD may choose to replicate activations across an FSDP mesh. Outside
    ``jax.set_mesh`` (single device, plain inference), or on a mesh lacking one of those axes, this is
    the identity.
    """
    if len(names) != x.ndim:
        raise ValueError(f"{len(names)} logical axis names {names} for an array of shape {x.shape}")
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    rules = active_rules()
    spec = tuple(mesh_axes(name, rules, "activation") for name in names)
    if not _named_axes(spec) <= set(mesh.axis_names):
        return x
    return jax.lax.with_sharding_constraint(x, PartitionSpec(*spec))


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
