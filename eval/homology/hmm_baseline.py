"""HMM search baseline for remote homology: pyhmmer's phmmer, each query against the whole domain database.

phmmer builds a profile HMM from one query sequence (BLOSUM62-derived emissions) and scores every database
sequence with HMMER3's pipeline (Eddy, PLoS Comput. Biol. 2011). The paper's baseline was HHblits
(profile-profile, Remmert et al. 2012), which is not available here; phmmer is the sequence-profile
counterpart. Scores are sequence bit scores; database entries phmmer does not report (filtered out or above
the E-value cut-off) get -inf, i.e. they tie below every reported hit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm


def phmmer_scores(
    query_indices: Sequence[int],
    names: Sequence[str],
    sequences: Sequence[str],
    *,
    evalue: float = 10.0,
    cpus: int = 0,
    show_progress: bool = False,
) -> tuple[np.ndarray, float]:
    """(len(query_indices), N) bit scores of each query against all N sequences, -inf where not reported.

    Returns the score matrix and the seconds the search took. ``names`` must be unique.
    """
    import pyhmmer

    if len(names) != len(sequences):
        raise ValueError(f"{len(names)} names but {len(sequences)} sequences; give one name per sequence")
    index_of = {name: i for i, name in enumerate(names)}
    if len(index_of) != len(names):
        raise ValueError("sequence names must be unique: hits are matched back to the database by name")
    alphabet = pyhmmer.easel.Alphabet.amino()
    digital = [
        pyhmmer.easel.TextSequence(name=name.encode(), sequence=sequence).digitize(alphabet)
        for name, sequence in zip(names, sequences, strict=True)
    ]
    database = pyhmmer.easel.DigitalSequenceBlock(alphabet, digital)
    queries = [digital[i] for i in query_indices]
    scores = np.full((len(queries), len(names)), -np.inf)
    started = time.monotonic()
    with tqdm(total=len(queries), unit="query", desc="phmmer", disable=not show_progress) as bar:
        for row, hits in enumerate(pyhmmer.hmmer.phmmer(queries, database, cpus=cpus, E=evalue)):
            for hit in hits:
                if hit.reported:
                    name = hit.name.decode() if isinstance(hit.name, bytes) else hit.name
                    scores[row, index_of[name]] = hit.score
            bar.update(1)
    return scores, time.monotonic() - started
