"""Skies, instruments and masks (the simulation stage's science).

``cmb`` (CAMB spectra, CMB alm), ``sky`` (parametric GRF / true-patch skies, foreground
maps), ``pysm_sky`` (PySM3 skies from local templates), ``instrument`` (the
``Instrument`` description, noise, observed signal), ``masks`` (Galactic masks, zones),
``misspecified`` (the building blocks of the misspecified sky kinds), ``footprint`` (the
masked SBI analysis), ``foregrounds`` (any sky's foreground maps in given bands),
``common_resolution`` (an instrument's bands at one resolution and one split, for the
parametric likelihood).
"""

from bmodesep.core.simulate.cmb import CMBSpectra, cmb_alm, compute_camb_spectra
from bmodesep.core.simulate.instrument import Instrument, observe_signal, simulate_noise
from bmodesep.core.simulate.masks import MASK_NAMES, ZONE_NAMES, galactic_zones
from bmodesep.core.simulate.sky import ParametricSky, foreground_maps, simulate_parametric_sky

__all__ = [
    "MASK_NAMES",
    "ZONE_NAMES",
    "CMBSpectra",
    "Instrument",
    "ParametricSky",
    "cmb_alm",
    "compute_camb_spectra",
    "foreground_maps",
    "galactic_zones",
    "observe_signal",
    "simulate_noise",
    "simulate_parametric_sky",
]
