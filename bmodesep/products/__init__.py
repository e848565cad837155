"""The HDF5 products: the only code that knows file layouts, keys, units and versions.

``io`` (atomic writes with provenance, checked reads), ``sims`` (spectra, sky, masks,
signal, noise), ``nilc``, ``npe`` (simulation chunks), ``compsep``, ``rlike``,
``npe_results`` (readers the figures use), ``checkpoint`` (resumable pieces of long jobs).
"""
