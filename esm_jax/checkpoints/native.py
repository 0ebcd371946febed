"""esm-jax's own checkpoint: an Orbax folder with the model's variables and its configuration.

Orbax writes into a temporary folder and renames it when complete, so an interrupted save
never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from esm_jax.errors import CheckpointError
from esm_jax.model import ESM, ModelConfig, abstract_model
from esm_jax.sharding import state_shardings, with_shardings

FORMAT = "esm_jax.native.v1"


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save(model: ESM, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Save ``model`` to the folder ``path`` (refuses to replace an existing one unless asked)."""
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    header = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "has_contact_regression": bool(model.has_contact_regression),
    }
    state = nnx.to_pure_dict(nnx.state(model))
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), header=ocp.args.JsonSave(header))
    if not path.exists():
        _checkpointer().save(path, args=args)
        return
    staging = path.with_name(f".{path.name}.saving-{os.getpid()}")  # the old checkpoint stays until this is whole
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _checkpointer().save(staging, args=args)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_into_place(staging, path)


def _swap_into_place(new: Path, path: Path) -> None:
    """Replace the folder (or file) ``path`` by the complete folder ``new``; the old one stays if this fails."""
    old = path.with_name(f".{path.name}.replaced-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


def is_checkpoint(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / "state").is_dir() and (path / "header").is_dir()


def read_header(path: str | os.PathLike) -> dict:
    path = Path(path).absolute()
    if not is_checkpoint(path):
        raise CheckpointError(f"{path}: not an esm-jax checkpoint folder (no state/ and header/)")
    header = _checkpointer().restore(path, args=ocp.args.Composite(header=ocp.args.JsonRestore()))["header"]
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {header.get('format')!r}")
    return header


def restore(path: str | os.PathLike, *, mesh: Mesh | None = None, **runtime_options) -> ESM:
    """Restore a model saved by :func:`save`, bit for bit; ``runtime_options`` are ModelConfig fields.

    With a ``mesh`` every variable is read straight into its shards, and the model runs its batches over it.
    """
    path = Path(path).absolute()
    header = read_header(path)
    config = ModelConfig.from_dict(header["config"]).replace(**runtime_options)
    model = abstract_model(config)
    state = nnx.state(model)
    target = sharded_targets(state, mesh)
    try:
        restored = _checkpointer().restore(path, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))[
            "state"
        ]
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise CheckpointError(f"{path}: the saved variables do not match the saved configuration ({exc})") from None
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
    model.has_contact_regression = bool(header["has_contact_regression"])
    model.mesh = mesh
    return model


def sharded_targets(state: nnx.State, mesh: Mesh | None) -> dict:
    """Restore targets for ``state``'s variables: in their shards on ``mesh``, else on the default device."""
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = nnx.map_state(lambda path, variable: device, state)
    else:
        shardings = state_shardings(state, mesh)
    return nnx.to_pure_dict(with_shardings(state, shardings))
