"""Figures the ESM authors published, printed under our own results for reference.

Only figures with an offline, citable source are listed: the fair-esm README (facebookresearch/esm), which
reproduces them from Rives et al. (bioRxiv 10.1101/622803; PNAS 2021) and from Rao et al. (bioRxiv
10.1101/2020.12.15.422761). The paper's data sets and training budgets differ from the small sets in
``../shared/data``, so the published numbers frame ours; they are not targets for a tiny model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eval.common.report import markdown_table

README_2019 = "fair-esm README.rst, facebookresearch/esm commit fb7ff4b"
README_2022 = "fair-esm README.md, facebookresearch/esm commit 18f7e23"


@dataclass(frozen=True)
class PublishedFigures:
    """One published table: what it measures, where it comes from, and its rows (model, then values)."""

    caption: str
    source: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def as_rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def as_json(self) -> dict[str, Any]:
        return {"caption": self.caption, "source": self.source, "rows": self.as_rows()}

    def markdown(self) -> str:
        return f"## Published figures\n\n{self.caption} Source: {self.source}.\n\n" + markdown_table(
            self.as_rows(), self.columns
        )


LANGUAGE_MODEL = PublishedFigures(
    caption=(
        "Held-out ECE of the ESM-1 Transformers on UniRef50 (Rives et al., Table 1), trained on the full "
        "UniRef releases named; a uniform guess over 25 letters scores 25 by definition."
    ),
    source=README_2019,
    columns=("model", "training data", "parameters", "ECE"),
    rows=(
        ("Transformer-6", "UR50/S", "43M", 11.79),
        ("Transformer-12", "UR50/S", "85M", 10.45),
        ("Transformer-34", "UR100", "670M", 10.32),
        ("Transformer-34", "UR50/S", "670M", 8.54),
        ("Transformer-34", "UR50/D", "670M", 8.46),
    ),
)

REMOTE_HOMOLOGY = PublishedFigures(
    caption=(
        "Fold-level Hit-10 on SCOP from nearest neighbours of mean-pooled embeddings (Rives et al., bioRxiv v3, "
        "Table 8, the table the README reproduces); UniRep, SeqVec and TAPE are other groups' models."
    ),
    source=README_2019,
    columns=("model", "training data", "parameters", "Hit-10 fold"),
    rows=(
        ("UniRep", "", "18M", 0.527),
        ("SeqVec", "", "93M", 0.545),
        ("TAPE", "", "38M", 0.581),
        ("LSTM biLM (S)", "UR50/S", "28M", 0.558),
        ("LSTM biLM (L)", "UR50/S", "113M", 0.574),
        ("Transformer-6", "UR50/S", "43M", 0.653),
        ("Transformer-12", "UR50/S", "85M", 0.639),
        ("Transformer-34", "UR100", "670M", 0.599),
        ("Transformer-34", "UR50/S", "670M", 0.639),
    ),
)

_SUPERVISED_MODELS = (
    ("UniRep", "UR50 (their own)", "18M"),
    ("SeqVec", "UR50 (their own)", "93M"),
    ("TAPE", "Pfam", "38M"),
    ("ProtBert-BFD", "BFD", "420M"),
    ("Prot-T5-XL-BFD", "BFD", "3B"),
    ("LSTM biLM (S)", "UR50/S", "28M"),
    ("LSTM biLM (L)", "UR50/S", "113M"),
    ("Transformer-6", "UR50/S", "43M"),
    ("Transformer-12", "UR50/S", "85M"),
    ("Transformer-34", "UR100", "670M"),
    ("Transformer-34", "UR50/S", "670M"),
    ("ESM-1b", "UR50/S", "650M"),
)
_CB513_Q8 = (58.4, 62.1, 58.0, 70.0, 71.4, 60.4, 62.4, 62.0, 65.4, 64.3, 69.2, 71.6)
_RAPTORX_LONG_TOP_L = (21.9, 29.0, 23.2, 50.3, 55.9, 24.1, 27.8, 30.2, 37.7, 32.7, 50.2, 56.9)

SECONDARY_STRUCTURE_DEEP = PublishedFigures(
    caption=(
        "Eight-class secondary structure accuracy (%) on CB513 from a supervised head over each model's "
        "representations (the README's 'supervised downstreams' comparison, Rives et al.)."
    ),
    source=README_2022,
    columns=("model", "training data", "parameters", "CB513 Q8 (%)"),
    rows=tuple((*model, q8) for model, q8 in zip(_SUPERVISED_MODELS, _CB513_Q8, strict=True)),
)

CONTACTS_DEEP = PublishedFigures(
    caption=(
        "Long-range (separation ≥ 24) top-L contact precision (%) on the RaptorX test set (Wang et al. 2017) "
        "from a supervised head over each model's representations (the README's 'supervised downstreams' "
        "comparison, Rives et al.)."
    ),
    source=README_2022,
    columns=("model", "training data", "parameters", "RaptorX long P@L (%)"),
    rows=tuple((*model, p) for model, p in zip(_SUPERVISED_MODELS, _RAPTORX_LONG_TOP_L, strict=True)),
)

CONTACTS_UNSUPERVISED = PublishedFigures(
    caption=(
        "Long-range top-L and top-L/5 contact precision (%) of a logistic regression on attention maps fitted "
        "on 20 structures, averaged over 14,842 test structures (Rao et al. 2020); the coupling methods "
        "(marked *) read trRosetta MSAs instead of one sequence."
    ),
    source=README_2022,
    columns=("model", "training data", "parameters", "long P@L (%)", "long P@L/5 (%)"),
    rows=(
        ("mfDCA*", "", "", 33.0, 54.2),
        ("Psicov*", "", "", 32.6, 58.1),
        ("Gremlin*", "", "", 39.3, 62.8),
        ("TAPE", "Pfam", "38M", 11.2, 17.9),
        ("ProtBert-BFD", "BFD", "420M", 34.1, 57.4),
        ("Prot-T5-XL-BFD", "BFD", "3B", 35.6, 57.8),
        ("Transformer-6", "UR50/S", "43M", 13.2, 21.5),
        ("Transformer-12", "UR50/S", "85M", 23.7, 39.3),
        ("Transformer-34", "UR50/S", "670M", 34.7, 56.0),
        ("ESM-1b", "UR50/S", "650M", 41.1, 66.1),
    ),
)
