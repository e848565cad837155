"""SBI simulation sets: their parameter draws and per-simulation seeds (pure, deterministic).

Chunk I of set S draws its parameter vectors with the stream ``("npe-theta:S", I)`` of the
campaign seed and simulates each with its own seed, so any chunk (and any simulation) can
be regenerated alone.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from bmodesep.core.npe import prior
from bmodesep.core.randomness import rng_for
from bmodesep.errors import ConfigError


class SimulationSet(NamedTuple):
    name: str
    prior: str  # a prior.prior variant
    fixed: dict[str, float]  # parameters held at these values
    simulations: int
    per_chunk: int
    foreground: str | None = None  # a simulation whose foregrounds every member shares

    @property
    def chunks(self) -> int:
        return math.ceil(self.simulations / self.per_chunk) if self.simulations else 0

    def chunk_size(self, chunk: int) -> int:
        return min(self.per_chunk, self.simulations - chunk * self.per_chunk)


def set_parameters(sim_set: SimulationSet, chunk: int, base_seed: int) -> np.ndarray:
    """The parameter vectors of one chunk: prior draws with the fixed ones overwritten."""
    n = sim_set.chunk_size(chunk)
    rng = rng_for(base_seed, f"npe-theta:{sim_set.name}", chunk)
    theta = prior.prior(sim_set.prior).sample(n, rng)
    for name, value in sim_set.fixed.items():
        if name not in prior.PARAMETERS:
            raise ConfigError(f"test set '{sim_set.name}': unknown parameter '{name}'")
        theta[:, prior.PARAMETERS.index(name)] = value
    return theta


def simulation_seed(base_seed: int, set_name: str, chunk: int, index: int) -> int:
    """The seed of one simulation: a pure function of the set, chunk and index."""
    return int(rng_for(base_seed, f"npe-seed:{set_name}", chunk, index).integers(0, 2**62))


def subset_chunks(fraction: float, chunks: int) -> int:
    """The training chunks of a nested subset (Fig. 1): the first ``ceil(fraction chunks)``."""
    return max(1, math.ceil(fraction * chunks))
