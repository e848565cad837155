"""The HDF5 products: the only code that knows file layouts, keys, units and versions.

``io`` (atomic writes with provenance, checked reads), ``sims`` (spectra, sky, masks,
signal, noise), ``nilc``, ``compsep`` (patch maps, grid chunks, selection, fits),
``rlike``, ``npe`` (simulation chunks), ``npe_results`` (estimator, tuning, posteriors,
coverage, observed), ``checkpoint`` (resumable pieces of long jobs).  Each product has
one writer and one checked reader here; stages and figures use nothing else.
"""
