"""``esm-jax convert``: between fair-esm .pt files, Hugging Face folders and esm-jax Orbax folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from esm_jax import pretrained
from esm_jax.checkpoints import fair_esm, native
from esm_jax.errors import EsmJaxError
from esm_jax.progress import progress_bar

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
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing DESTINATION (and its -contact-regression.pt)"
    )


def _outputs(destination: Path) -> list[Path]:
    """The paths a conversion to ``destination`` writes."""
    if destination.suffix == ".pt":
        return [destination, fair_esm.regression_path(destination)]
    return [destination]


def _refuse_existing(destination: Path, overwrite: bool) -> None:
    """Refuse (before reading anything) to replace outputs unless asked, or to replace a file by a folder."""
    existing = [path for path in _outputs(destination) if path.exists() or path.is_symlink()]
    if existing and not overwrite:
        raise EsmJaxError(
            f"{existing[0]} already exists; pass --overwrite to replace it, or choose another DESTINATION"
        )
    wants_file = destination.suffix == ".pt"
    wrong = next((path for path in existing if path.is_dir() == wants_file), None)
    if wrong is not None:
        kind = "a folder" if wants_file else "a file"
        raise EsmJaxError(f"{wrong} is {kind}; --overwrite replaces a checkpoint only with one of the same kind")


def run(args: argparse.Namespace) -> int:
    destination = Path(args.destination)
    _refuse_existing(destination, args.overwrite)
    with progress_bar(desc=f"reading {Path(args.source).name}", unit=" tensors") as bar:
        model, _ = pretrained.load_model_and_alphabet_local(args.source, on_tensor=lambda name: bar.update())
    print(f"writing {destination} ({model.config.num_parameters():,} parameters, {model.config.architecture})")
    if destination.suffix == ".pt":
        pretrained.save_fair_esm(model, destination)
    else:
        native.save(model, destination, overwrite=args.overwrite)
    print(f"done: {destination}")
    return 0
