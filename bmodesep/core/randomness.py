"""Reproducible random streams: every stream is a pure function of (seed, labels).

A noise realisation, a sky or a patch draw is reproducible from its seed and its
indices alone, whatever else was drawn before, in whatever order or process.
"""

from __future__ import annotations

import zlib

import numpy as np


def rng_for(seed: int, stream: str, *indices: int) -> np.random.Generator:
    """Generator of the named ``stream`` (e.g. ``"noise"``) at ``indices`` for ``seed``."""
    if seed < 0 or any(i < 0 for i in indices):
        raise ValueError(f"seed and indices must be non-negative, got {seed}, {indices}")
    key = [int(seed), zlib.crc32(stream.encode()), *map(int, indices)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))
