"""``esm-jax demo``: the whole system on a real proteome in minutes, ending in a report folder.

Builds TFRecords from a protein FASTA (by default the 2,100-protein bacterial proteome that
ships inside the pyhmmer wheel), pretrains the tiny config with the MLM objective, checkpoints,
measures held-out ECE against the unigram baseline, extracts embeddings with the trained model,
and writes Markdown, JSON and PNG results. The demo fits no contact regression, so its map is the
unsupervised APC-corrected attention map (Rao et al. 2021), labelled as such, not a contact
prediction. Rerunning it in the same folder reuses the finished run (or extends it to more --steps).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from esm_jax.alphabet import Alphabet
from esm_jax.cli.configuration import apply_overrides, load_config_file
from esm_jax.errors import EsmJaxError
from esm_jax.fasta import bundled_proteome, read_fasta
from esm_jax.files import write_json_atomically, write_text_atomically
from esm_jax.inference.extract import extract, load_extracted
from esm_jax.model import ESM
from esm_jax.model.heads import attention_contact_maps
from esm_jax.plots import contact_map_png, projection_png

MIN_PROTEINS = 20  # enough for a non-empty held-out split
HELDOUT_PROTEINS = 10  # small corpora hold out a larger fraction so that about this many proteins are held out
ATTENTION_TITLE = "APC-corrected attention, mean over layers and heads (unsupervised, not a fitted contact predictor)"

DESCRIPTION = """\
Run esm-jax end to end and write a report: build training data from a protein FASTA, pretrain the
tiny model for a few minutes, compare its held-out ECE with the unigram baseline, then embed
proteins and predict contacts with it. With no arguments it uses the 2,100-protein bacterial
proteome that ships with pyhmmer (terminal '*' stop codons are removed) and finishes in about
10 minutes on 2 CPU cores. The FASTA needs at least 20 proteins, each with a name after '>'.
Running it again with the same --workdir reuses the finished run, or trains on if --steps grew.

Example with your own proteins:
  esm-jax demo --fasta my_proteins.fasta --workdir demo_run --steps 600
"""


METRIC_EXPLANATIONS = """What the numbers mean:
- **heldout_ece** (exponentiated cross-entropy): on proteins the model never saw, 15% of residues are hidden and
  the model guesses them; ECE is how many amino acids it is effectively choosing between per guess. 1 is perfect,
  about 20 is a guess that knows only how common each amino acid is, and 25 is a blind guess.
- **target_unigram_ece**: the same for the best guess that uses only amino-acid frequencies; a model that learned
  anything about protein sequences scores below it.
- **heldout_masked_accuracy**: the share of hidden residues the model's first choice gets right.
- **train_tokens_per_second**, **embedding_residues_per_second**: training and embedding speed on this machine.
- **proteins_embedded**: proteins whose mean embedding is drawn in the projection below (each point a protein,
  placed by the two directions along which the embeddings vary most, coloured by its length)."""


def add_parser(subcommands, name: str) -> None:
    parser = subcommands.add_parser(
        name, help="train, evaluate and embed on a bundled proteome, and write a report", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--fasta", help="protein FASTA to use instead of the bundled proteome")
    parser.add_argument("--workdir", default="esm_jax_demo", help="output folder (default: ./esm_jax_demo)")
    parser.add_argument("--config", help="training config (default: configs/pretrain.py:tiny of this installation)")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    parser.add_argument("--num-proteins", type=int, default=128, help="proteins to embed for the report (default: 128)")


def default_config_spec() -> str:
    """``<installed configs package>/pretrain.py:tiny``."""
    spec = importlib.util.find_spec("configs.pretrain")
    if spec is None or spec.origin is None:
        raise SystemExit("error: the configs package is not installed; pass --config path/to/pretrain.py:tiny")
    return f"{spec.origin}:tiny"


def _check_arguments(args: argparse.Namespace) -> None:
    for flag, value in (("--steps", args.steps), ("--num-proteins", args.num_proteins)):
        if value < 1:
            raise EsmJaxError(f"{flag} must be at least 1, got {value}")


def _corpus_records(source: Path) -> list[tuple[str, str]]:
    """The FASTA's ``(first word of the header, sequence)`` pairs, refusing what the data build cannot use."""
    records = read_fasta(source, strip_stop=True)
    names: dict[str, int] = {}
    for number, (label, _) in enumerate(records, start=1):
        if not label.split():
            raise EsmJaxError(f"{source}: record {number} has an empty header; give every protein a name after '>'")
        name = label.split()[0]
        if name in names:
            raise EsmJaxError(
                f"{source}: records {names[name]} and {number} share the name {name!r} (the header's first word); "
                "make the names unique"
            )
        names[name] = number
    if len(records) < MIN_PROTEINS:
        raise EsmJaxError(
            f"{source} holds {len(records)} protein(s); the demo needs at least {MIN_PROTEINS} to train on some and "
            "hold some out for the held-out ECE"
        )
    return [(label.split()[0], sequence) for label, sequence in records]


def _write_corpus(records: list[tuple[str, str]], destination: Path) -> None:
    write_text_atomically(destination, "".join(f">{name}\n{sequence}\n" for name, sequence in records))


def attention_map(model: ESM, sequence: str) -> np.ndarray:
    """The unsupervised contact signal of ``sequence`` (L, L): APC(A + Aᵀ) of the attention averaged over every
    layer and head, with BOS/EOS removed as the contact head's inputs are (Rao et al. 2021). Not probabilities."""
    alphabet = Alphabet()
    ids = [alphabet.cls_idx, *alphabet.encode(sequence), alphabet.eos_idx]
    tokens = jnp.asarray([ids], jnp.int32)
    attentions = model.forward(tokens, (), need_head_weights=True)["attentions"]  # (1, layers, heads, T, T)
    probs = attentions.mean(axis=(1, 2))[:, None]
    return np.asarray(attention_contact_maps(tokens, probs, alphabet.eos_idx, alphabet.padding_idx))[0, 0]


def _heldout_fraction(proteins: int, default: float) -> float:
    """The config's fraction, raised for a small corpus so that about ``HELDOUT_PROTEINS`` are held out."""
    return max(default, min(0.5, HELDOUT_PROTEINS / proteins))


def run(args: argparse.Namespace) -> int:
    from esm_jax.checkpoints.training_run import load_trained_model
    from esm_jax.train.trainer import train

    started = time.perf_counter()
    _check_arguments(args)
    workdir = Path(args.workdir).absolute()
    source = Path(args.fasta) if args.fasta else bundled_proteome()
    corpus = workdir / "data" / "corpus.fasta"
    corpus_records = _corpus_records(source)
    proteins = len(corpus_records)
    _write_corpus(corpus_records, corpus)
    config = load_config_file(args.config or default_config_spec())
    apply_overrides(config, [
        f"data.uniref50_fasta=['{corpus}']", "data.member_fasta=[]", "data.mapping_tsv=", "data.dataset=ur50_s",
        "data.dataset_dir=", f"data.build_dir={workdir / 'data'}", f"train.total_steps={args.steps}",
        f"evals.heldout.every={max(args.steps // 3, 1)}", f"train.checkpoint_every={max(args.steps // 3, 1)}",
    ])  # fmt: skip
    config.data.heldout_fraction = _heldout_fraction(proteins, config.data.heldout_fraction)
    result = train(config, workdir / "run")
    if result.last_heldout is None:
        raise EsmJaxError(f"{workdir / 'run'} has no held-out evaluation; remove the folder and rerun the demo")
    model = load_trained_model(workdir / "run")
    records = read_fasta(source, strip_stop=True, limit=args.num_proteins)
    summary = extract(model, records, workdir / "embeddings", include=("mean",), repr_layers=[-1])
    _report(workdir, records, summary, result, model, source, proteins, time.perf_counter() - started)
    print(f"report written to {workdir / 'report'}")
    return 0


def _report(workdir: Path, records, summary, result, model, source: Path, proteins: int, seconds: float) -> None:
    report = workdir / "report"
    report.mkdir(parents=True, exist_ok=True)
    extracted = [load_extracted(summary.files[label]) for label, _ in records]
    means = np.stack([item["mean_representations"][model.num_layers] for item in extracted])
    lengths = np.array([len(sequence) for _, sequence in records])
    first, sequence = records[0][0].split()[0], records[0][1]
    contact_map_png(attention_map(model, sequence), report / "attention_map.png", f"{ATTENTION_TITLE}\n{first}",
                    "APC-corrected attention (not a probability)")  # fmt: skip
    projection_png(means, report / "embedding_projection.png", "mean embeddings of the trained model (PCA)",
                   lengths, "protein length (residues)", log_colour=True)  # fmt: skip
    shutil.copyfile(workdir / "run" / "learning_curve.png", report / "learning_curve.png")
    heldout, trained = result.last_heldout, result.last_train
    metrics = {
        "corpus": str(source),
        "proteins_in_corpus": proteins,
        "training_steps": result.step,
        "heldout_ece": heldout["ece"],
        "target_unigram_ece": heldout["target_unigram_ece"],
        "heldout_masked_accuracy": heldout["masked_accuracy"],
        "train_tokens_per_second": trained["tokens_per_second"] if trained else None,
        "proteins_embedded": summary.sequences,
        "embedding_residues_per_second": summary.residues_per_second,
        "minutes": seconds / 60,
    }
    write_json_atomically(report / "metrics.json", metrics)
    rows = "\n".join(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
                     for key, value in metrics.items())  # fmt: skip
    verdict = "below" if heldout["ece"] < heldout["target_unigram_ece"] else "NOT below"
    write_text_atomically(
        report / "summary.md",
        "# esm-jax demo report\n\n"
        f"The tiny model trained for {result.step} steps reaches a held-out ECE of {heldout['ece']:.2f}, {verdict} "
        f"the {heldout['target_unigram_ece']:.2f} of a unigram (amino-acid frequency) model fitted to those very "
        "held-out targets, the best any unigram scores on them.\n\n"
        f"| item | value |\n|---|---|\n{rows}\n\n"
        f"{METRIC_EXPLANATIONS}\n\n"
        "![learning curve](learning_curve.png)\n\n"
        "The map below is the trained model's attention averaged over every layer and head, symmetrised and "
        "APC-corrected: an unsupervised contact signal (Rao et al. 2021). No contact regression was fitted, so it "
        "is not a contact prediction and its values are not probabilities.\n\n"
        "![APC-corrected attention map](attention_map.png)\n\n"
        "![embedding projection](embedding_projection.png)\n",
    )
