"""Which input elements a robustness protocol removes: seeded boolean masks over padded sequences.

A mask is True where an element is kept. Positions at or past a sequence's length are always True, so
padding is never touched; with `keep_ends` the first and last valid positions (a tokenizer's CLS and
SEP) are kept too. The same (seed, rate, lengths) give the same mask in any process, so every
architecture is scored on identical inputs.
"""

from __future__ import annotations

import numpy as np


def valid_positions(lengths: np.ndarray, width: int) -> np.ndarray:
    """(N, width) bool: True within each sequence's length."""
    return np.arange(width)[None, :] < np.asarray(lengths)[:, None]


def keep_mask(
    lengths: np.ndarray, width: int, rate: float | np.ndarray, rng: np.random.Generator, keep_ends: bool = False
) -> np.ndarray:
    """(N, width) bool: each valid element kept with probability 1 - rate (`rate` one value, or one per
    sample); padding always kept, and with `keep_ends` each sequence's first and last valid element."""
    lengths = np.asarray(lengths, np.int64)
    rates = np.broadcast_to(np.asarray(rate, np.float64), lengths.shape)[:, None]
    keep = (rng.random((len(lengths), width)) >= rates) | ~valid_positions(lengths, width)
    if keep_ends:
        rows = np.flatnonzero(lengths > 0)
        keep[rows, 0] = True
        keep[rows, np.minimum(lengths[rows], width) - 1] = True
    return keep


def training_rates(n: int, missing_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Per-sample missing rates as LNLN trains: r ~ U(0, missing_rate), and a random half of the samples
    left complete (r = 0)."""
    rates = rng.uniform(0.0, missing_rate, n)
    rates[rng.permutation(n)[: n - n // 2]] = 0.0  # the larger half stays complete
    return rates
