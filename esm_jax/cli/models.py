"""How the command line names a model: a checkpoint path, a released name, or a shape with random weights."""

from __future__ import annotations

import argparse

from esm_jax import pretrained
from esm_jax.errors import EsmJaxError
from esm_jax.mesh import inference_mesh
from esm_jax.model import ESM, NAMED_MODELS
from esm_jax.model.config import ATTENTION_IMPLEMENTATIONS


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="build the named model shape with random weights instead of loading it (for trying the pipeline)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-weights (default: 0)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="precision of the matrix multiplications (default: float32, identical to fair-esm)",
    )
    parser.add_argument(
        "--attention-impl",
        choices=ATTENTION_IMPLEMENTATIONS,
        default="auto",
        help="attention kernel: auto picks per_head on CPUs, splash on TPUs, cudnn (bfloat16) or dense (float32) "
        "on GPUs (default: auto)",
    )
    parser.add_argument(
        "--mesh",
        default="auto",
        help="devices of this process the model runs on: auto splits every batch over all of them; sizes such "
        "as data=4,fsdp=2,tensor=1 also split the parameters (fsdp, tensor) for models larger than one "
        "device; one size may be -1 (default: auto)",
    )


MODEL_HELP = (
    "a checkpoint: a fair-esm .pt file (its -contact-regression.pt beside it), a Hugging Face ESM folder, "
    "an esm-jax checkpoint folder, or a released name such as esm2_t33_650M_UR50D "
    f"(fetched once into the cache). Released names: {', '.join(NAMED_MODELS)}"
)


def load_model(name: str, args: argparse.Namespace) -> ESM:
    try:
        mesh = inference_mesh(args.mesh)
    except ValueError as error:
        raise EsmJaxError(f"--mesh {args.mesh}: {error}") from None
    options = {"compute_dtype": args.dtype, "attention_impl": args.attention_impl, "mesh": mesh}
    if args.random_weights:
        model, _ = pretrained.random_model_and_alphabet(name, seed=args.seed, **options)
    else:
        model, _ = pretrained.load_model_and_alphabet(name, **options)
    return model


def model_identity(args: argparse.Namespace) -> str:
    """How the command line named the model, for records of what an output was made with."""
    suffix = f" (random weights, seed {args.seed})" if args.random_weights else ""
    return f"{args.model_location}{suffix}"
