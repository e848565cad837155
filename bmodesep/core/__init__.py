"""The pure science of bmodesep, by subject: arrays and small typed settings in, arrays out.

* :mod:`bmodesep.core.simulate` — CMB spectra (CAMB), parametric / PySM skies, instruments
  (beams, 1/f noise, filters, splits), Galactic masks and zones;
* :mod:`bmodesep.core.compsep` — the spectral likelihood, K-means / multi-resolution
  patches, fits and the patch-count grid search (kabalan2025);
* :mod:`bmodesep.core.rlike` — BB spectra of masked maps (f_sky, MASTER), residuals and
  the r likelihood of eq. 15;
* :mod:`bmodesep.core.nilc` — needlet and harmonic ILC, the SBI data vector;
* :mod:`bmodesep.core.npe` — the Table 1 prior, the forward model, the sbi flows, TARP;
* :mod:`bmodesep.core.harmonics`, :mod:`bmodesep.core.seds`,
  :mod:`bmodesep.core.randomness` — shared by all.

No module here reads files, YAML or HDF5, or prints: settings come typed from
:mod:`bmodesep.settings`, data through :mod:`bmodesep.products`, messages through
``logging``.  Importing a subject imports only what it needs (no JAX for ``simulate``).
"""
