"""``esm-jax convert``: between fair-esm .pt files, Hugging Face folders and esm-jax Orbax folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from esm_jax import pretrained
from esm_jax.checkpoints import native

DESCRIPTION = """\
Convert a model checkpoint. SOURCE may be an official fair-esm .pt file (with its
-contact-regression.pt beside it), a Hugging Face ESM folder (config.json + weights) or an
esm-jax checkpoint folder. DESTINATION ending in .pt is written as a fair-esm checkpoint that
fair-esm itself loads (ESM-2 files must be named esm2*.pt, as fair-esm expects); any other
DESTINATION is written as an esm-jax (Orbax) checkpoint folder.

Examples:
  esm-jax convert esm2_t33_650M_UR50D.pt checkpoints/esm2_650M
  esm-jax convert hf/esm2_t6_8M_UR50D esm2_t6_8M_UR50D.pt
"""


def add_parser(subcommands, name: str) -> None:
    parser = subcommands.add_parser(
        name,
        help="convert checkpoints (fair-esm .pt, Hugging Face, esm-jax)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SOURCE", help="checkpoint to read")
    parser.add_argument("destination", metavar="DESTINATION", help="where to write (.pt file or folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing esm-jax checkpoint folder")


def run(args: argparse.Namespace) -> int:
    with tqdm(desc=f"reading {Path(args.source).name}", unit=" tensors") as bar:
        model, _ = pretrained.load_model_and_alphabet_local(args.source, on_tensor=lambda name: bar.update())
    destination = Path(args.destination)
    print(f"writing {destination} ({model.config.num_parameters():,} parameters, {model.config.architecture})")
    if destination.suffix == ".pt":
        pretrained.save_fair_esm(model, destination)
    else:
        native.save(model, destination, overwrite=args.overwrite)
    print(f"done: {destination}")
    return 0
