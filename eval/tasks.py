"""Every evaluation task by its command-line name, imported only when asked for (each module defines ``TASK``)."""

from __future__ import annotations

import importlib

from esm_jax.errors import EsmJaxError
from eval.common.task import Task

# task name -> module whose TASK implements it
TASK_MODULES: dict[str, str] = {
    "language-model": "eval.language_model.task",
    "aa-embeddings": "eval.language_model.aa_embeddings",
    "remote-homology": "eval.homology.remote_homology",
    "family-alignment": "eval.homology.family_alignment",
    "mutational-effect": "eval.variants.mutational_effect",
    "zero-shot-variants": "eval.variants.zero_shot",
    "secondary-structure-linear": "eval.structure.secondary.linear",
    "contacts-linear": "eval.structure.contacts.linear",
    "contacts-unsupervised": "eval.structure.contacts.unsupervised",
    "secondary-structure-deep": "eval.structure.secondary.deep",
    "contacts-deep": "eval.structure.contacts.deep",
    "feature-combination": "eval.structure.feature_combination",
    "structure-vs-lm": "eval.structure.structure_vs_lm",
    "structural-holdout": "eval.structure.holdout",
    "compare": "eval.compare",
    "summary": "eval.summary",
}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is refused with the list of known ones."""
    if name not in TASK_MODULES:
        raise EsmJaxError(f"unknown evaluation task {name!r}; known: {', '.join(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name]).TASK
