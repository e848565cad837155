"""Simulation-based inference of r (duivenvoorden2025).

``prior`` (Table 1), ``simulator`` (theta -> data vector), ``sets`` (simulation sets, their
draws and seeds), ``flows`` (sbi neural posterior estimation; imports torch),
``coverage`` (TARP, HDI, predictive chi^2).

Every name below is imported on first use (``bmodesep.settings`` imports ``sets`` at every
workflow start; torch is loaded only by code that trains or samples).  The prior of a
variant is ``prior.prior(name)``: the submodule keeps its name.
"""

import importlib

_WHERE = {
    "hdi": "coverage",
    "index_field_sigma": "coverage",
    "predictive_chi2": "coverage",
    "sigma_beta": "coverage",
    "tarp": "coverage",
    "PARAMETERS": "prior",
    "Prior": "prior",
    "SimulationSet": "sets",
    "set_parameters": "sets",
    "Setup": "simulator",
    "make_setup": "simulator",
    "simulate": "simulator",
    "Posterior": "flows",
    "hyperparameters": "flows",
    "rebuild": "flows",
    "train": "flows",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        module = importlib.import_module(f"bmodesep.core.npe.{_WHERE[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'bmodesep.core.npe' has no attribute {name!r}")


def __dir__():
    return [*globals(), *__all__]
