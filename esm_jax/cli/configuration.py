"""``--config path.py[:arg]`` plus ``--config.a.b=value`` overrides, as ml_collections config files.

The file's ``get_config(arg)`` builds an ``ml_collections.ConfigDict``; each override replaces
one existing field, converted to that field's type (bool, int, float, str, list/tuple);
``--config.evals.NAME={...}`` adds an evaluator. Mistakes raise :class:`ConfigError`, one line naming
the override or file.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import ml_collections

from esm_jax.errors import EsmJaxError

OVERRIDE_PREFIX = "--config."


class ConfigError(EsmJaxError, ValueError):
    """A config file or a ``--config.*`` override cannot be used as given."""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="config file and optional argument, e.g. configs/pretrain.py:tiny"
    )
    parser.set_defaults(config_overrides=[])


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--config.a.b=value`` items (also ``--config.a.b value``) from the other arguments."""
    rest, overrides = [], []
    items = list(argv)
    while items:
        item = items.pop(0)
        if item.startswith(OVERRIDE_PREFIX):
            if "=" not in item:
                if not items:
                    raise ConfigError(f"{item} needs a value, e.g. {item}=VALUE")
                item = f"{item}={items.pop(0)}"
            overrides.append(item[len(OVERRIDE_PREFIX) :])
        else:
            rest.append(item)
    return rest, overrides


def _convert(text: str, current: object, name: str) -> object:
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"--config.{name} expects true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(current, int | float | str) or current is None:
        kind = type(current) if current is not None else str
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"--config.{name} expects a {kind.__name__}, got {text!r}") from None
    if isinstance(current, list | tuple):
        return type(current)(_list(text, name))
    raise ConfigError(f"--config.{name} cannot be set from the command line")


def _list(text: str, name: str) -> list:
    """A Python list or tuple literal (or one value) as a list; anything else is refused."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ConfigError(f'--config.{name} expects a list such as [64, 128] or \'["a", "b"]\', got {text!r}') from None
    return list(value) if isinstance(value, list | tuple) else [value]


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """``config`` with every ``a.b=value`` of ``overrides`` applied (see the module's description)."""
    for item in overrides:
        name, _, text = item.partition("=")
        *parents, field = name.split(".")
        node = _section(config, parents, name)
        if field not in node and parents == ["evals"]:
            with node.unlocked():
                node[field] = _new_evaluator(text, name)
            continue
        if field not in node:
            raise ConfigError(f"--config.{name}: the config has no field {field!r} there; it has {sorted(node)}")
        with node.unlocked():
            node[field] = _convert(text, node[field], name)
    return config


def _section(config: ml_collections.ConfigDict, parents: Sequence[str], name: str) -> ml_collections.ConfigDict:
    """The section ``parents`` of ``config`` (``a.b`` of ``--config.a.b.c``), refused by name when it is not one."""
    node = config
    for depth, parent in enumerate(parents):
        where = ".".join(parents[:depth]) or "the config"
        if not isinstance(node, ml_collections.ConfigDict) or parent not in node:
            known = sorted(node) if isinstance(node, ml_collections.ConfigDict) else []
            raise ConfigError(f"--config.{name}: {where} has no section {parent!r}; it has {known}")
        node = node[parent]
    if not isinstance(node, ml_collections.ConfigDict):
        raise ConfigError(f"--config.{name}: {'.'.join(parents)} is a value, not a section")
    return node


def _new_evaluator(text: str, name: str) -> ml_collections.ConfigDict:
    """``--config.evals.NAME={"every": N, ...}``: an evaluator the config file did not list."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, dict):
        raise ConfigError(f"--config.{name} expects a dict such as {{'every': 100}}, got {text!r}")
    return ml_collections.ConfigDict(value)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``path.py[:arg]`` → the file's ``get_config(arg)``."""
    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist; give e.g. configs/pretrain.py:tiny")
    module_spec = importlib.util.spec_from_file_location(f"esm_jax_config_{Path(path).stem}", path)
    if module_spec is None:
        raise ConfigError(f"config file {path}: not a Python file; give a .py file defining get_config(arg)")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"config file {path} defines no get_config(arg); it must return an ml_collections.ConfigDict")
    config = module.get_config(arg or None)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"config file {path}: get_config({arg!r}) returned {type(config).__name__}, not a ConfigDict")
    return config


def load_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
    return apply_overrides(load_config_file(args.config), args.config_overrides)
