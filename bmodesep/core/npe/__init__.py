"""Simulation-based inference of r (duivenvoorden2025).

``prior`` (Table 1), ``simulator`` (theta -> data vector), ``sets`` (simulation sets, their
draws and seeds), ``flows`` (sbi neural posterior estimation; imports torch),
``coverage`` (TARP, HDI, predictive chi^2).
"""
