"""Counter-based random numbers: the same seed and counters give the same numbers on every machine.

Every random choice of the pipeline (held-out clusters, UR50/D draws, crops, masks) is a pure function of
``(seed, stream, counter)`` computed with the SplitMix64 finaliser (Steele, Lea & Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014) in plain unsigned 64-bit integer arithmetic. Unlike a stateful
generator, nothing has to be saved to resume, and unlike NumPy's ``Generator`` or TensorFlow's stateless ops the
values cannot change with a library version or a CPU model.
"""

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_MINUS_53 = 1.0 / (1 << 53)


def stable_hash64(text: str) -> int:
    """First 8 bytes (big-endian) of SHA-256 of ``text``: a hash that is identical on every machine and Python."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _mix(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = values ^ (values >> np.uint64(30))
        z = z * _MUL1
        z = z ^ (z >> np.uint64(27))
        z = z * _MUL2
        return z ^ (z >> np.uint64(31))


def random_bits(seed: int, stream: int | np.ndarray, counter: int | np.ndarray) -> np.ndarray:
    """64 random bits for each ``(stream, counter)`` pair (broadcast), fixed by ``seed``."""
    seed_word = np.asarray(seed % (1 << 64), dtype=np.uint64)
    stream_words = np.asarray(stream, dtype=np.uint64)
    counter_words = np.asarray(counter, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _mix(_mix(seed_word ^ _GOLDEN) + stream_words * _GOLDEN)
        return _mix(key + (counter_words + np.uint64(1)) * _GOLDEN)


def uniform(seed: int, stream: int | np.ndarray, counter: int | np.ndarray) -> np.ndarray:
    """Floats in [0, 1) with 53 random bits each, one per ``(stream, counter)`` pair."""
    return (random_bits(seed, stream, counter) >> np.uint64(11)).astype(np.float64) * _TWO_POW_MINUS_53


def below(seed: int, stream: int | np.ndarray, counter: int | np.ndarray, bound: int | np.ndarray) -> np.ndarray:
    """Integers in [0, bound), one per ``(stream, counter)`` pair; the bias is below ``bound / 2**53``."""
    draws = np.floor(uniform(seed, stream, counter) * np.asarray(bound, dtype=np.float64)).astype(np.int64)
    return np.minimum(draws, np.asarray(bound, dtype=np.int64) - 1)


def permutation(seed: int, stream: int, size: int) -> np.ndarray:
    """A permutation of ``range(size)`` fixed by ``(seed, stream)``: indices sorted by their random keys."""
    keys = random_bits(seed, stream, np.arange(size, dtype=np.uint64))
    return np.argsort(keys, kind="stable")
