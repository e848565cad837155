"""bmodesep: CMB B-mode foreground cleaning and tensor-to-scalar ratio inference.

The package behind a Snakemake workflow: ``core`` (pure science), ``products`` (HDF5),
``stages`` (one module per rule file), ``plots``; ``bmodesep <stage> <step>`` runs a step.
Maps are HEALPix RING in uK_CMB, frequencies in GHz, arrays ``[freq, stokes, pix]``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bmodesep")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from bmodesep.errors import BmodesepError, ConfigError, DataError

__all__ = ["BmodesepError", "ConfigError", "DataError", "__version__"]
