"""Load and save ESM models: the fair-esm compatible entry points.

``load_model_and_alphabet_local(path)`` accepts an official fair-esm ``.pt`` file (with its
``-contact-regression.pt`` beside it), a Hugging Face ESM folder, or an esm-jax Orbax
checkpoint folder. ``load_model_and_alphabet(name)`` also accepts a released model name and
fetches the official file into a local cache on first use.
"""

from __future__ import annotations

import os
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from jax.sharding import Mesh

from esm_jax.alphabet import Alphabet
from esm_jax.checkpoints import fair_esm, huggingface, native, torch_reader, torch_writer, training_run
from esm_jax.checkpoints.tensor_map import as_numpy, blank_contact_regression, build_from_tensors, export_from
from esm_jax.errors import CheckpointError
from esm_jax.mesh import inference_mesh, on_inference_mesh
from esm_jax.model import ESM, build_model, named_config
from esm_jax.model.named import MODELS_WITHOUT_CONTACT_REGRESSION, NAMED_MODELS

HUB_URL = "https://dl.fbaipublicfiles.com/fair-esm"
Progress = Callable[[str], None]


def _no_progress(name: str) -> None:
    del name


def _runtime_options(**options) -> dict:
    """The ModelConfig fields that change how a model runs (never its weights), without the unset ones."""
    return {name: value for name, value in options.items() if value is not None}


def load_fair_esm(
    path: str | os.PathLike,
    *,
    on_tensor: Progress = _no_progress,
    mesh: Mesh | None = None,
    **runtime_options,
) -> ESM:
    """Read an official fair-esm checkpoint (and its contact regression, if present).

    ``runtime_options`` are ModelConfig fields such as ``compute_dtype`` or ``attention_impl``; with a
    ``mesh`` each tensor is read straight into its shards.
    """
    path = Path(path)
    data = torch_reader.load(path)
    state = fair_esm.state_dict(data, str(path))
    config = fair_esm.config_from_checkpoint(data, set(state), str(path))
    config = config.replace(**runtime_options)
    slots = fair_esm.model_slots(config)
    regression_file = fair_esm.regression_path(path)
    has_regression = regression_file.is_file()
    if has_regression:
        state.update(fair_esm.state_dict(torch_reader.load(regression_file), str(regression_file)))
        slots = slots + fair_esm.CONTACT_SLOTS
    elif fair_esm.expects_regression(path):
        warnings.warn(
            f"{regression_file} not found: the model loads, but contacts cannot be predicted until "
            "the contact-regression file is placed next to the checkpoint",
            stacklevel=2,
        )
    _refuse_unexpected(state, slots, config.num_layers, str(path))
    if config.architecture == "esm1b":
        state["embed_tokens.weight"] = _zero_mask_row(state, str(path))
    if not has_regression:
        state.update(blank_contact_regression(config, fair_esm.CONTACT_SLOTS))
        slots = slots + fair_esm.CONTACT_SLOTS
    model = build_from_tensors(config, slots, state, str(path), on_tensor, mesh)
    model.has_contact_regression = has_regression
    return model


def _zero_mask_row(state: dict, source: str) -> np.ndarray:
    """fair-esm zeroes the ``<mask>`` embedding of ESM-1b/1v on load (token dropout); so do we."""
    if "embed_tokens.weight" not in state:
        raise CheckpointError(f"{source}: tensor 'embed_tokens.weight' is missing from the checkpoint")
    weight = state["embed_tokens.weight"]
    if not (isinstance(weight, np.ndarray) or hasattr(weight, "numpy")):
        raise CheckpointError(f"{source}: 'embed_tokens.weight' is a {type(weight).__name__}, not a tensor")
    table = np.array(as_numpy(weight), dtype=np.float32)
    mask_idx = Alphabet().mask_idx
    if table.ndim == 2 and table.shape[0] > mask_idx:
        table[mask_idx] = 0.0
    return table


def _refuse_unexpected(state: dict, slots: list, num_layers: int, source: str) -> None:
    known = {name for slot in slots for name in slot.names(num_layers)} | {"lm_head.weight"}
    unexpected = sorted(set(state) - known)
    if unexpected:
        raise CheckpointError(
            f"{source}: unexpected tensors {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}; the "
            "checkpoint's weights do not match the architecture its arguments describe"
        )


def load_model_and_alphabet_local(
    path: str | os.PathLike,
    *,
    compute_dtype: str | None = None,
    scan_layers: bool | None = None,
    attention_impl: str | None = None,
    on_tensor: Progress = _no_progress,
    mesh: Mesh | str | None = "auto",
) -> tuple[ESM, Alphabet]:
    """Load a model from a fair-esm ``.pt`` file, a Hugging Face folder, an esm-jax Orbax folder or a training run.

    ``compute_dtype``, ``scan_layers`` and ``attention_impl`` (see :class:`ModelConfig`) change how the
    model runs; left unset, the checkpoint's own (or the default) values are kept. ``mesh``
    (:func:`~esm_jax.mesh.inference_mesh`; default: every local device) is where the parameters live
    and over which every batch's rows are split; every format is read straight into the shards (``.pt``
    and Hugging Face files one tensor at a time).
    """
    path = Path(path)
    options = _runtime_options(compute_dtype=compute_dtype, scan_layers=scan_layers, attention_impl=attention_impl)
    mesh = inference_mesh(mesh)
    if path.is_dir():
        if training_run.is_training_run(path):
            model = training_run.load_trained_model(path, mesh=mesh, **options)
        elif (path / "config.json").is_file():
            model = huggingface.load(path, on_tensor=on_tensor, mesh=mesh, **options)
        elif native.is_checkpoint(path):
            model = native.restore(path, mesh=mesh, **options)
        else:
            raise CheckpointError(f"{path}: folder holds neither a Hugging Face config.json nor an esm-jax checkpoint")
    elif path.is_file():
        model = load_fair_esm(path, on_tensor=on_tensor, mesh=mesh, **options)
    else:
        raise CheckpointError(f"{path}: no such file or folder")
    return model, Alphabet()


def cache_dir() -> Path:
    """Where fetched official checkpoints are kept (``$ESM_JAX_CACHE`` or ``~/.cache/esm_jax``)."""
    return Path(os.environ.get("ESM_JAX_CACHE", Path.home() / ".cache" / "esm_jax"))


def _fetch(url: str, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    try:
        with urllib.request.urlopen(url) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 24):
                out.write(chunk)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not fetch {url} ({exc}); download it by hand and pass the local path instead"
        ) from None
    os.replace(partial, destination)


def load_model_and_alphabet(name_or_path: str, **options) -> tuple[ESM, Alphabet]:
    """Load by path, or by released name (e.g. ``esm2_t33_650M_UR50D``) via the local cache.

    A name not yet cached is fetched from ``$ESM_JAX_HUB_URL`` (default: fair-esm's public
    server) with its contact regression; nothing is fetched once the files are cached.
    """
    if name_or_path.endswith(".pt") or Path(name_or_path).exists():
        return load_model_and_alphabet_local(name_or_path, **options)
    named_config(name_or_path)
    hub = os.environ.get("ESM_JAX_HUB_URL", HUB_URL).rstrip("/")
    model_file = cache_dir() / f"{name_or_path}.pt"
    if not model_file.is_file():
        _fetch(f"{hub}/models/{name_or_path}.pt", model_file)
    regression_file = fair_esm.regression_path(model_file)
    if name_or_path not in MODELS_WITHOUT_CONTACT_REGRESSION and not regression_file.is_file():
        _fetch(f"{hub}/regression/{regression_file.name}", regression_file)
    return load_model_and_alphabet_local(model_file, **options)


def random_model_and_alphabet(
    name: str, *, seed: int = 0, mesh: Mesh | str | None = "auto", **options
) -> tuple[ESM, Alphabet]:
    """A released model shape with random weights (no download), on ``mesh`` as loaded models are."""
    config = named_config(name).replace(**_runtime_options(**options))
    return on_inference_mesh(build_model(config, seed=seed), mesh), Alphabet()


def save_fair_esm(model: ESM, path: str | os.PathLike) -> None:
    """Write ``model`` as an official fair-esm checkpoint that ``esm.pretrained`` loads.

    fair-esm picks the file layout from the file name, so ESM-2 files must be named
    ``esm2*.pt`` and ESM-1b files must not; the contact regression is written beside it as
    ``<name>-contact-regression.pt``.
    """
    path = Path(path)
    config = model.config
    is_esm2_name = path.stem.startswith("esm2")
    if path.suffix != ".pt":
        raise ValueError(f"{path}: fair-esm checkpoints end in .pt")
    if (config.architecture == "esm2") != is_esm2_name:
        wanted = "start with 'esm2'" if config.architecture == "esm2" else "not start with 'esm2'"
        raise ValueError(f"{path}: fair-esm chooses the checkpoint layout by file name; this file name must {wanted}")
    if not model.has_contact_regression and fair_esm.expects_regression(path):
        raise ValueError(
            f"{path}: the model has no contact regression but fair-esm will look for one; "
            "use a file name containing 'esm1v' (as for ESM-1v) or load the regression first"
        )
    tensors = export_from(model, fair_esm.model_slots(config), config.num_layers)
    tensors["lm_head.weight"] = tensors["embed_tokens.weight"]
    state = {fair_esm.add_prefix(name): value for name, value in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_writer.save({**fair_esm.checkpoint_header(config), "model": state}, path)
    if model.has_contact_regression:
        regression = export_from(model, fair_esm.CONTACT_SLOTS, config.num_layers)
        torch_writer.save({"model": regression}, fair_esm.regression_path(path))


__all__ = [
    "NAMED_MODELS",
    "cache_dir",
    "load_fair_esm",
    "load_model_and_alphabet",
    "load_model_and_alphabet_local",
    "random_model_and_alphabet",
    "save_fair_esm",
]
