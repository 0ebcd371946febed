"""``--config path.py[:arg]`` plus ``--config.a.b=value`` overrides, as ml_collections config files.

The file's ``get_config(arg)`` builds an ``ml_collections.ConfigDict``; each override replaces
one existing field, converted to that field's type (bool, int, float, str, list/tuple);
``--config.evals.NAME={...}`` adds an evaluator.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import ml_collections

OVERRIDE_PREFIX = "--config."


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
                    raise SystemExit(f"error: {item} needs a value")
                item = f"{item}={items.pop(0)}"
            overrides.append(item[len(OVERRIDE_PREFIX) :])
        else:
            rest.append(item)
    return rest, overrides


def _convert(text: str, current: object, name: str) -> object:
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise SystemExit(f"error: --config.{name} expects true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(current, int | float | str) or current is None:
        kind = type(current) if current is not None else str
        try:
            return kind(text)
        except ValueError:
            raise SystemExit(f"error: --config.{name} expects a {kind.__name__}, got {text!r}") from None
    if isinstance(current, list | tuple):
        value = ast.literal_eval(text)
        return type(current)(value if isinstance(value, list | tuple) else [value])
    raise SystemExit(f"error: --config.{name} cannot be set from the command line")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    for item in overrides:
        name, _, text = item.partition("=")
        *parents, field = name.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        if field not in node and parents == ["evals"]:
            with node.unlocked():
                node[field] = _new_evaluator(text, name)
            continue
        if field not in node:
            raise SystemExit(f"error: the config has no field {name!r}")
        with node.unlocked():
            node[field] = _convert(text, node[field], name)
    return config


def _new_evaluator(text: str, name: str) -> ml_collections.ConfigDict:
    """``--config.evals.NAME={"every": N, ...}``: an evaluator the config file did not list."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, dict):
        raise SystemExit(f"error: --config.{name} expects a dict such as {{'every': 100}}, got {text!r}")
    return ml_collections.ConfigDict(value)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``path.py[:arg]`` → the file's ``get_config(arg)``."""
    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise SystemExit(f"error: config file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"esm_jax_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def load_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
    return apply_overrides(load_config_file(args.config), args.config_overrides)
