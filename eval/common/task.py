"""The one shape every evaluation has: a name, frozen options, and ``run(backbone, data, out, options) -> Result``.

A task's options are a frozen dataclass whose fields carry their help text (:func:`option`). The command line
(:func:`add_option_flags`, :func:`options_from_flags`) and the ml_collections config used by training
evaluators (:func:`options_config`, :func:`options_from_config`) are both generated from it, so no option is
written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from esm_jax import pretrained
from esm_jax.errors import EsmJaxError
from esm_jax.mesh import on_inference_mesh
from esm_jax.model import ESM, NAMED_MODELS, BiLSTMLM, build_model


def option(default: Any, help: str, *, choices: tuple | None = None) -> Any:
    """A task option with its default and the help text its command-line flag shows."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """Options every task has; a task's own options subclass this."""

    seed: int = option(0, "seed for random weights and any sampling")


class Backbone:
    """The frozen model a task evaluates, and the name reports give it.

    From the command line the model is loaded on first use, so tasks that read a training run instead
    (``structure-vs-lm``) never load one; training evaluators pass the model they hold.
    """

    def __init__(
        self,
        checkpoint: str | None,
        *,
        random_weights: bool = False,
        seed: int = 0,
        model: ESM | BiLSTMLM | None = None,
    ):
        self.checkpoint = checkpoint
        self.random_weights = random_weights
        self.seed = seed
        self._loads_its_model = model is None
        if model is not None:
            self.__dict__["model"] = model

    @functools.cached_property
    def model(self) -> ESM | BiLSTMLM:
        """The named checkpoint (with ``random_weights``: its shape, freshly initialised), on every local device.

        A training run of an LSTM baseline gives a :class:`BiLSTMLM`: logits and per-layer representations, as
        :class:`ESM` gives them, but no attention maps or contacts (tasks built on attention refuse it).
        """
        if self.checkpoint is None:
            raise EsmJaxError("this task needs a model: pass --checkpoint")
        if self.random_weights and self.checkpoint in NAMED_MODELS:
            return on_inference_mesh(build_model(self.checkpoint, seed=self.seed))
        model, _ = pretrained.load_model_and_alphabet(self.checkpoint)
        return on_inference_mesh(build_model(model.config, seed=self.seed)) if self.random_weights else model

    def report_fields(self) -> dict[str, Any]:
        """What every results file says about the backbone.

        A model loaded here is also named by :func:`weights_digest`, so results of two different models that
        share a checkpoint path (a run trained again into the same folder) are told apart by ``eval all
        --resume`` and ``eval summary``. A model a training run passes in is not hashed: its parameters may be
        sharded over hosts, and the run's step names it.
        """
        fields = {"checkpoint": self.checkpoint, "random_weights": self.random_weights}
        if self.checkpoint is not None and self._loads_its_model:
            fields["weights_sha256"] = weights_digest(self.model)
        return fields


def weights_digest(model: nnx.Module) -> str:
    """The first 16 hex digits of a SHA-256 over every parameter's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    for path, leaf in leaves:
        array = np.asarray(jax.device_get(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Result:
    """A task's headline numbers (the full results are in the files it wrote under ``out``)."""

    metrics: Mapping[str, Any]

    def scalars(self) -> dict[str, float]:
        """Every finite number in :attr:`metrics`, nested names joined by ``/`` (what training logs)."""
        flat: dict[str, float] = {}

        def visit(prefix: str, value: Any) -> None:
            if isinstance(value, Mapping):
                for key, inner in value.items():
                    visit(f"{prefix}/{key}" if prefix else str(key), inner)
            elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                flat[prefix] = float(value)

        visit("", self.metrics)
        return flat

    def __str__(self) -> str:
        return str(dict(self.metrics))


RunFunction = Callable[[Backbone, Path, Path, Any], Result]


@dataclasses.dataclass(frozen=True)
class Task:
    """One evaluation: its CLI name, description (first line: the help summary), options and run function.

    ``needs_checkpoint`` is False for tasks whose input is something else (a training run). ``skip_reason``
    says why ``esm-jax eval all`` cannot run the task on a backbone (None: it can). ``on_training_model`` is
    what a training evaluator runs on the live model, where that differs from ``run``.
    """

    name: str
    description: str
    options: type[TaskOptions]
    run: RunFunction
    needs_checkpoint: bool = True
    skip_reason: Callable[[Backbone, Any], str | None] | None = None
    on_training_model: RunFunction | None = None

    def why_skipped(self, backbone: Backbone, options: TaskOptions) -> str | None:
        return self.skip_reason(backbone, options) if self.skip_reason else None


def _field_types(options: type[TaskOptions]) -> dict[str, Any]:
    return typing.get_type_hints(options)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """``(type, optional)`` of a field annotation such as ``int | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return inner[0], True
    return annotation, False


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_option_flags(parser: argparse.ArgumentParser, options: type[TaskOptions]) -> None:
    """One flag per field of ``options``, typed, with its default in the help text."""
    hints = _field_types(options)
    for field in dataclasses.fields(options):
        kind, _ = _base_type(hints[field.name])
        help_text, choices = field.metadata["help"].replace("%", "%%"), field.metadata["choices"]
        default = field.default
        if kind is bool:
            action = "store_true" if not default else argparse.BooleanOptionalAction
            parser.add_argument(flag_name(field.name), action=action, default=default, help=help_text)
            continue
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            parser.add_argument(
                flag_name(field.name),
                nargs="+",
                type=item,
                choices=choices,
                default=default,
                help=f"{help_text} (default: {' '.join(map(str, default or ())) or 'none'})",
            )
            continue
        shown = "none" if default is None else default
        parser.add_argument(
            flag_name(field.name), type=kind, choices=choices, default=default, help=f"{help_text} (default: {shown})"
        )


def options_from_flags(options: type[TaskOptions], namespace: argparse.Namespace) -> TaskOptions:
    """The options a parsed command line gave (other attributes of ``namespace`` are ignored)."""
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(options)}
    hints = _field_types(options)
    for name, value in values.items():
        if typing.get_origin(_base_type(hints[name])[0]) is tuple and value is not None:
            values[name] = tuple(value)
    return options(**values)


def options_config(options: type[TaskOptions]) -> ml_collections.ConfigDict:
    """The task's options as a ConfigDict at their defaults (``None`` defaults become typed placeholders)."""
    hints = _field_types(options)
    config = ml_collections.ConfigDict()
    for field in dataclasses.fields(options):
        kind, _ = _base_type(hints[field.name])
        if field.default is None:
            kind = str if typing.get_origin(kind) is tuple else kind
            config[field.name] = ml_collections.config_dict.placeholder(kind)
        else:
            config[field.name] = field.default
    return config


def options_from_config(
    options: type[TaskOptions], values: Mapping[str, Any], *, where: str = "evaluation options"
) -> TaskOptions:
    """Options from a config mapping; an unknown key is refused in one line naming it and the known ones."""
    known = {f.name for f in dataclasses.fields(options)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise EsmJaxError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    hints = _field_types(options)
    return options(**{name: _typed(value, _base_type(hints[name])[0]) for name, value in values.items()})


def _typed(value: Any, kind: Any) -> Any:
    """``value`` from a config as the field's type (configs hold paths as strings and sequences as lists)."""
    if value is None:
        return None
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return tuple(item(v) for v in ((value,) if isinstance(value, str) else value))
    return kind(value) if kind in (Path, float) else value
