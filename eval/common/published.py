"""Figures the ESM authors published, printed under our own results for reference.

Every table a task reproduces is copied from Rives et al., "Biological structure and function emerge from scaling
unsupervised learning to 250 million protein sequences", PNAS 118 (2021) e2016239118, whose text is in
``../shared/paper/rives2021_esm1b.txt``: names, blanks and "—" as printed, each mean ± SD cell split into a value
column and an SD column. Two tables come from the fair-esm README instead, for figures the paper lacks: Rao et al.'s
unsupervised contacts (bioRxiv 10.1101/2020.12.15.422761) and two later models scored with the paper's supervised
heads. The paper's data sets and training budgets differ from the small sets in ``../shared/data``, so the
published numbers frame ours; they are not targets for a tiny model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eval.common.report import markdown_table

PAPER = "Rives et al., PNAS 2021"
README_2022 = "fair-esm README.md, facebookresearch/esm commit 18f7e23"


@dataclass(frozen=True)
class PublishedFigures:
    """One published table: what it measures, where it comes from, and its rows (model, then values)."""

    caption: str
    source: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"{self.source}: row {row} has {len(row)} cells for {len(self.columns)} columns")

    def as_rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def as_json(self) -> dict[str, Any]:
        return {"caption": self.caption, "source": self.source, "rows": self.as_rows()}

    def markdown(self) -> str:
        """The table under a heading; floats as written here (48.0, not the 4-digit 48 of our own results)."""
        rows = [{k: str(v) if isinstance(v, float) else v for k, v in row.items()} for row in self.as_rows()]
        heading = f"## Published figures ({self.source})\n\n{self.caption} Source: {self.source}.\n\n"
        return heading + markdown_table(rows, self.columns)


def _table(number: int) -> str:
    return f"{PAPER}, Table {number}"


LANGUAGE_MODEL = PublishedFigures(
    caption=(
        "Exponentiated cross entropy on held-out UniRef50 clusters: 25 is a uniform guess over the amino acid "
        "tokens, 1 a perfect model. The n-gram row is the best over context sizes and Laplace smoothing; the "
        "'% data' rows are 34-layer Transformers trained on that fraction of UR50/S."
    ),
    source=_table(1),
    columns=("model", "variant", "parameters", "training data", "ECE"),
    rows=(
        ("Oracle", "", "", "", 1),
        ("Uniform Random", "", "", "", 25),
        ("n-gram", "4-gram", "", "UR50/S", 17.18),
        ("LSTM", "Small", "28.4 M", "UR50/S", 14.42),
        ("LSTM", "Large", "113.4 M", "UR50/S", 13.54),
        ("Transformer", "6-layer", "42.6 M", "UR50/S", 11.79),
        ("Transformer", "12-layer", "85.1 M", "UR50/S", 10.45),
        ("Transformer", "34-layer", "669.2 M", "UR100", 10.32),
        ("Transformer", "34-layer", "669.2 M", "UR50/S", 8.54),
        ("Transformer", "34-layer", "669.2 M", "UR50/D", 8.46),
        ("Transformer", "10% data", "669.2 M", "UR50/S", 10.99),
        ("Transformer", "1% data", "669.2 M", "UR50/S", 15.01),
        ("Transformer", "0.1% data", "669.2 M", "UR50/S", 17.50),
    ),
)

REMOTE_HOMOLOGY = PublishedFigures(
    caption=(
        "Remote homology on SCOP by distance between mean-pooled embeddings: Hit-10 is the chance that a remote "
        "homolog is among the query's 10 nearest neighbours, AUC classifies by distance from the query; fold "
        "excludes the query's superfamily, superfamily (SF) its family. *HHblits: three iterations of HMM search."
    ),
    source=_table(2),
    columns=("model", "pretraining", "Hit-10 fold", "Hit-10 SF", "AUC fold", "AUC SF"),
    rows=(
        ("HHblits*", "", 0.584, 0.965, 0.831, 0.951),
        ("LSTM (S)", "UR50/S", 0.558, 0.760, 0.801, 0.863),
        ("LSTM (L)", "UR50/S", 0.574, 0.813, 0.805, 0.880),
        ("Transformer-6", "UR50/S", 0.653, 0.878, 0.768, 0.901),
        ("Transformer-12", "UR50/S", 0.639, 0.915, 0.778, 0.942),
        ("Transformer-34", "(None)", 0.481, 0.527, 0.755, 0.807),
        ("Transformer-34", "UR100", 0.599, 0.841, 0.753, 0.876),
        ("Transformer-34", "UR50/D", 0.617, 0.932, 0.822, 0.932),
        ("Transformer-34", "UR50/S", 0.639, 0.931, 0.825, 0.933),
        ("ESM-1b", "UR50/S", 0.532, 0.913, 0.770, 0.880),
    ),
)

RELATED_MODELS = PublishedFigures(
    caption=(
        "Related protein language models evaluated in the paper's own pipeline: RH is fold-level Hit-10 on SCOP, "
        "SSP eight-class accuracy (%) on CB513, contact top-L long-range precision (%) on the RaptorX test set "
        "(Wang et al. 2017). *Pretrained by their authors on data that differs from ours."
    ),
    source=_table(8),
    columns=("model", "pretraining", "parameters", "RH", "SSP", "contact"),
    rows=(
        ("UniRep*", "", "18 M", 0.527, 58.4, 21.9),
        ("SeqVec*", "", "93 M", 0.545, 62.1, 29.0),
        ("Tape*", "", "38 M", 0.581, 58.0, 23.2),
        ("LSTM (S)", "UR50/S", "28.4 M", 0.558, 60.4, 24.1),
        ("LSTM (L)", "UR50/S", "113.4 M", 0.574, 62.4, 27.8),
        ("Transformer-6", "UR50/S", "42.6 M", 0.653, 62.0, 30.2),
        ("Transformer-12", "UR50/S", "85.1 M", 0.639, 65.4, 37.7),
        ("Transformer-34", "UR100", "669.2 M", 0.599, 64.3, 32.7),
        ("Transformer-34", "UR50/S", "669.2 M", 0.639, 69.2, 50.2),
        ("ESM-1b", "UR50/S", "652.4 M", 0.532, 71.6, 56.9),
    ),
)

_LINEAR_CAPTION = (
    "Linear projections, fivefold cross validation with structural holdout at the family, superfamily and fold "
    "level on 15,297 SCOPe structures; mean and SD over the five test partitions. {what}"
)
_LINEAR_COLUMNS = ("model", "pretraining") + tuple(
    f"{level} {stat}" for level in ("family", "superfamily", "fold") for stat in ("(%)", "SD")
)

SECONDARY_STRUCTURE_LINEAR = PublishedFigures(
    caption=_LINEAR_CAPTION.format(what="Eight-class secondary structure accuracy (%), the table's SSP columns."),
    source=_table(3),
    columns=_LINEAR_COLUMNS,
    rows=(
        ("HMM Profile", "—", 47.9, 1.1, 47.8, 1.3, 48.0, 1.6),
        ("CCMpred", "—", "—", "—", "—", "—", "—", "—"),
        ("Transformer-6", "UR50/S", 62.4, 0.7, 61.8, 0.7, 61.8, 1.0),
        ("Transformer-12", "UR50/S", 65.5, 0.7, 65.0, 1.0, 65.2, 1.0),
        ("Transformer-34", "(None)", 41.5, 0.9, 41.3, 0.8, 41.3, 1.3),
        ("Transformer-34", "UR100", 65.4, 0.7, 64.9, 0.9, 64.9, 0.9),
        ("Transformer-34", "UR50/S", 69.4, 0.6, 68.8, 0.9, 68.9, 0.9),
        ("Transformer-34", "UR50/D", 69.5, 0.6, 68.9, 0.9, 69.0, 0.9),
        ("ESM-1b", "UR50/S", 71.1, 0.5, 70.5, 0.9, 70.6, 0.9),
    ),
)

CONTACTS_LINEAR = PublishedFigures(
    caption=_LINEAR_CAPTION.format(
        what="Top-L long-range (separation ≥ 24) contact precision (%), the table's Contact columns; CCMpred is "
        "direct coupling analysis on HHblits alignments."
    ),
    source=_table(3),
    columns=_LINEAR_COLUMNS,
    rows=(
        ("HMM Profile", "—", 14.8, 0.6, 14.5, 1.4, 14.6, 1.6),
        ("CCMpred", "—", 32.7, 1.0, 32.5, 2.3, 32.6, 0.4),
        ("Transformer-6", "UR50/S", 24.4, 2.2, 19.4, 3.1, 18.6, 0.5),
        ("Transformer-12", "UR50/S", 32.8, 2.9, 25.8, 3.7, 25.2, 0.9),
        ("Transformer-34", "(None)", 8.7, 0.3, 8.4, 0.7, 8.4, 0.3),
        ("Transformer-34", "UR100", 28.3, 2.5, 22.5, 3.3, 22.0, 0.8),
        ("Transformer-34", "UR50/S", 43.9, 2.8, 36.4, 4.2, 35.3, 1.7),
        ("Transformer-34", "UR50/D", 43.9, 2.8, 37.1, 4.6, 36.3, 2.0),
        ("ESM-1b", "UR50/S", 49.2, 2.5, 43.5, 4.8, 42.8, 2.3),
    ),
)

SECONDARY_STRUCTURE_DEEP = PublishedFigures(
    caption=(
        "Eight-class secondary structure accuracy (%) of a fixed deep head (NetSurf architecture) trained on the "
        "NetSurf training set over each representation, tested on CB513 and the CASP13 domains; mean and SD over "
        "five training seeds. HMM Profile is the NetSurf reimplementation on its own profiles."
    ),
    source=_table(4),
    columns=("model", "pretraining", "CB513 (%)", "CB513 SD", "CASP13 (%)", "CASP13 SD"),
    rows=(
        ("HMM Profile", "", 71.2, 0.1, 72.3, 0.9),
        ("LSTM (S)", "UR50/S", 60.4, 0.1, 63.2, 0.6),
        ("LSTM (L)", "UR50/S", 62.4, 0.2, 64.1, 0.7),
        ("Transformer-6", "UR50/S", 62.0, 0.2, 64.2, 1.2),
        ("Transformer-12", "UR50/S", 65.4, 0.1, 67.2, 0.3),
        ("Transformer-34", "(None)", 56.8, 0.3, 60.0, 0.5),
        ("Transformer-34", "UR100", 64.3, 0.2, 66.5, 0.3),
        ("Transformer-34", "UR50/S", 69.1, 0.2, 70.7, 0.8),
        ("Transformer-34", "UR50/D", 69.2, 0.1, 70.9, 0.5),
        ("ESM-1b", "UR50/S", 71.6, 0.1, 72.5, 0.2),
    ),
)

CONTACTS_DEEP = PublishedFigures(
    caption=(
        "Top-L long-range contact precision (%) of a dilated residual network trained on the RaptorX training set "
        "over each representation; Test and CASP11 hold out at 25% sequence identity, CASP12 is a temporal "
        "holdout of the structures, CASP13 of both structures and pretraining sequences."
    ),
    source=_table(5),
    columns=("model", "pretraining", "Test (%)", "CASP11 (%)", "CASP12 (%)", "CASP13 (%)"),
    rows=(
        ("LSTM (S)", "UR50/S", 24.1, 23.6, 19.9, 15.3),
        ("LSTM (L)", "UR50/S", 27.8, 26.4, 24.0, 16.4),
        ("Transformer-6", "UR50/S", 30.2, 29.9, 25.3, 19.8),
        ("Transformer-12", "UR50/S", 37.7, 33.6, 27.8, 20.7),
        ("Transformer-34", "(None)", 16.3, 17.7, 14.8, 13.3),
        ("Transformer-34", "UR100", 32.7, 28.9, 24.3, 19.1),
        ("Transformer-34", "UR50/S", 50.2, 42.8, 34.7, 30.1),
        ("Transformer-34", "UR50/D", 50.0, 43.0, 33.6, 28.0),
        ("ESM-1b", "UR50/S", 56.9, 47.4, 42.7, 35.9),
    ),
)

FEATURE_COMBINATION_SECONDARY_STRUCTURE = PublishedFigures(
    caption=(
        "Eight-class secondary structure accuracy (%) when 34-layer Transformer (UR50/S) features are added to "
        "NetSurf's: direct adds the query's representation, avg its average over the query's MSA; a two-layer "
        "BiLSTM head, mean and SD over five training seeds. RaptorX and NetSurf are their published accuracies."
    ),
    source=_table(6),
    columns=("features", "CB513 (%)", "CB513 SD", "CASP13 (%)", "CASP13 SD"),
    rows=(
        ("RaptorX", 70.6, "", "", ""),
        ("NetSurf", 72.1, "", 74, ""),
        ("NetSurf (reimpl.)", 71.2, 0.1, 72.3, 0.9),
        ("+direct", 72.1, 0.1, 72.2, 0.5),
        ("+avg", 73.7, 0.2, 75.1, 0.4),
    ),
)

FEATURE_COMBINATION_CONTACTS = PublishedFigures(
    caption=(
        "Top-L long-range contact precision (%) of a deep ResNet on RaptorX features, with 34-layer Transformer "
        "(UR50/S) features added: direct the query's representation, avg its average over the MSA, cov the "
        "uncentered covariance over the MSA of PCA-reduced features; mean and SD over five training seeds. "
        "Test sets: RaptorX Test 500 domains, CASP11 105, CASP12 55, CASP13 34."
    ),
    source=_table(7),
    columns=("features",)
    + tuple(f"{name} {stat}" for name in ("Test", "CASP11", "CASP12", "CASP13") for stat in ("(%)", "SD")),
    rows=(
        ("RaptorX", 59.4, 0.2, 53.8, 0.3, 51.1, 0.2, 43.4, 0.4),
        ("+direct", 61.7, 0.4, 55.0, 0.1, 51.5, 0.5, 43.7, 0.4),
        ("+avg", 62.9, 0.4, 56.6, 0.4, 52.4, 0.5, 44.8, 0.8),
        ("+cov", 63.3, 0.2, 56.8, 0.2, 53.0, 0.3, 45.2, 0.5),
    ),
)

RELATED_MODELS_README = PublishedFigures(
    caption=(
        "Two later models the fair-esm README lists beside the paper's Table 8 rows: eight-class secondary "
        "structure accuracy (%) on CB513 and top-L long-range contact precision (%) on the RaptorX test set."
    ),
    source=README_2022,
    columns=("model", "pretraining", "parameters", "SSP", "contact"),
    rows=(
        ("ProtBert-BFD", "BFD", "420M", 70.0, 50.3),
        ("Prot-T5-XL-BFD", "BFD", "3B", 71.4, 55.9),
    ),
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
