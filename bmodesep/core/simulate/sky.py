"""Parametric skies: CMB plus Gaussian-random-field dust and synchrotron (Q/U).

The foreground model follows duivenvoorden2025 sec. II.1, extended from B modes to
Q/U:
* amplitudes at the reference frequencies with ``D_l^BB = A (l/80)^alpha`` (uK_CMB^2),
  ``C_l^EE = (EE/BB) C_l^BB``, dust-synchrotron cross spectra
  ``rho_ds sqrt(C^d C^s)`` (eq. 13), for l >= 2;
* spectral-index fields ``beta(n) = mean + GRF`` with ``C_l = B (l/1)^gamma`` for
  l >= ell_min (eqs. 7, 11); the same for an optional spatially varying T_d;
* an optional Galactic envelope ``1 + a exp(-|sin b| / h)`` multiplying the
  amplitudes, so that Galactic masks made from the sky look Galactic (a = 0 keeps
  the statistically isotropic model of the paper).
A *true-patch* sky replaces each index field by its mean over given patches, so
beta_d, T_d and beta_s are constant per patch (kabalan2025 sec. 5.1).  The misspecified
kinds add one departure each to the GRF sky (:mod:`misspecified`): ``lognormal`` dust
amplitudes, ``layered`` dust (extra layers with their own Q/U and SED), a
``curved_synchrotron`` index, and indices ``correlated`` with the amplitudes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from bmodesep.core import harmonics, seds
from bmodesep.core.randomness import rng_for
from bmodesep.core.simulate import misspecified
from bmodesep.core.simulate.cmb import CMBSpectra, cmb_alm
from bmodesep.errors import ConfigError

ELL_PIVOT = 80.0
MIN_DUST_TEMPERATURE_K = 5.0
PATCH_PARAMETERS = seds.SPECTRAL_PARAMETERS


class IndexField(NamedTuple):
    """A spectral-index (or temperature) field: ``mean + GRF`` with ``C_l = B l^gamma``."""

    mean: float
    amplitude: float = 0.0  # B; 0 gives a constant field
    gamma: float = 0.0
    ell_min: int = 2


class Foreground(NamedTuple):
    """Amplitude spectrum ``D_l^BB = A (l/80)^alpha`` of one component and its SED fields."""

    amplitude_uk2: float
    alpha: float
    ee_over_bb: float
    freq_ref_ghz: float
    beta: IndexField
    temperature_k: IndexField | None = None  # dust only


PARAMETRIC_KINDS = ("grf", "true_patch", "lognormal", "layered", "curved_synchrotron", "correlated")


class DustLayer(NamedTuple):
    """A dust layer besides the main one (kind ``layered``): amplitude relative to it."""

    weight: float
    beta: IndexField
    temperature_k: IndexField


class SkyModel(NamedTuple):
    """A parametric sky (``grf``, ``true_patch`` or a misspecified GRF kind), built once
    from its config entry; the fields after ``envelope_scale`` serve one kind each."""

    kind: str
    seed: int
    dust: Foreground
    synchrotron: Foreground
    rho_ds: float = 0.0
    b_modes_only: bool = False
    envelope_amplitude: float = 0.0  # the Galactic envelope; 0: isotropic
    envelope_scale: float = 1.0
    lognormal: IndexField | None = None  # lognormal: mean = sigma, C_l ~ l^gamma of g
    dust_layers: tuple[DustLayer, ...] = ()  # layered
    sync_curvature: float = 0.0  # curved_synchrotron: C of beta_s + C ln(nu / nu_c)
    sync_curvature_freq_ghz: float = 23.0
    amplitude_correlation: tuple[float, float] = (0.0, 0.0)  # correlated: beta_d, beta_s


class ParametricSky(NamedTuple):
    """Sky components at their reference frequencies (uK_CMB) and spectral-parameter maps."""

    cmb_alm: np.ndarray  # [2 (E, B), nalm] uK_CMB
    cmb_qu: np.ndarray  # [2, npix] uK_CMB
    dust_qu: np.ndarray  # [2, npix] uK_CMB at dust_freq_ref_ghz
    sync_qu: np.ndarray  # [2, npix] uK_CMB at sync_freq_ref_ghz
    beta_d: np.ndarray  # [npix]
    temp_d_k: np.ndarray  # [npix] K
    beta_s: np.ndarray  # [npix]
    dust_freq_ref_ghz: float
    sync_freq_ref_ghz: float
    # misspecified kinds: further dust layers (Q/U [2, npix], beta_d, T_d maps) and the
    # synchrotron curvature C (index beta_s + C ln(nu / nu_c))
    dust_layers: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...] = ()
    sync_curvature: float = 0.0
    sync_curvature_freq_ghz: float = 23.0


def power_law_cl(amplitude_uk2: float, alpha: float, lmax: int) -> np.ndarray:
    """C_l with ``l(l+1) C_l / 2 pi = A (l/80)^alpha`` for l >= 2, zero below."""
    ell = np.arange(lmax + 1, dtype=float)
    cl = np.zeros(lmax + 1)
    good = ell >= 2
    cl[good] = (
        2 * np.pi * amplitude_uk2 * (ell[good] / ELL_PIVOT) ** alpha / (ell[good] * (ell[good] + 1))
    )
    return cl


def index_field_cl(amplitude: float, gamma: float, lmax: int, ell_min: int = 2) -> np.ndarray:
    """C_l = B (l / 1)^gamma for l >= ell_min (duivenvoorden2025 eqs. 7, 11)."""
    ell = np.arange(lmax + 1, dtype=float)
    cl = np.zeros(lmax + 1)
    good = ell >= ell_min
    cl[good] = amplitude * ell[good] ** gamma
    return cl


def foreground_amplitude_alm(
    dust: Foreground,
    sync: Foreground,
    rho_ds: float,
    lmax: int,
    rng: np.random.Generator,
    b_modes_only: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Correlated (E, B) alm of dust and synchrotron amplitudes, each ``[2, nalm]``."""
    cl_d = power_law_cl(dust.amplitude_uk2, dust.alpha, lmax)
    cl_s = power_law_cl(sync.amplitude_uk2, sync.alpha, lmax)
    out = []
    for scale_d, scale_s in ((dust.ee_over_bb, sync.ee_over_bb), (1.0, 1.0)):
        cd, cs = scale_d * cl_d, scale_s * cl_s
        cross = rho_ds * np.sqrt(cd * cs)
        cov = np.array([[cd, cross], [cross, cs]])
        out.append(harmonics.correlated_gaussian_alm(cov, lmax, rng))
    (e_d, e_s), (b_d, b_s) = out
    if b_modes_only:
        e_d, e_s = np.zeros_like(e_d), np.zeros_like(e_s)
    return np.stack([e_d, b_d]), np.stack([e_s, b_s])


def index_field_map(
    spec: IndexField, nside: int, lmax: int, rng: np.random.Generator
) -> np.ndarray:
    """``mean + GRF`` map of a spectral index (or temperature) field."""
    field = np.full(harmonics.npix(nside), float(spec.mean))
    if spec.amplitude > 0:
        cl = index_field_cl(spec.amplitude, spec.gamma, lmax, spec.ell_min)
        alm = harmonics.gaussian_alm(cl, lmax, rng)
        field += harmonics.synthesis(alm, nside, lmax, spin=0)[0]
    return field


def galactic_envelope_map(nside: int, amplitude: float, scale: float) -> np.ndarray:
    """``1 + amplitude exp(-|sin b| / scale)`` in Galactic coordinates (RING)."""
    z = harmonics.pix2vec(nside, np.arange(harmonics.npix(nside)))[:, 2]
    return 1.0 + amplitude * np.exp(-np.abs(z) / scale)


def superpixel_patches(nside: int, patch_nside: int) -> np.ndarray:
    """Integer patch map: the HEALPix pixel at ``patch_nside`` holding each pixel (0: one patch)."""
    pix = np.arange(harmonics.npix(nside))
    if patch_nside == 0:
        return np.zeros_like(pix)
    if patch_nside > nside:
        raise ConfigError(f"superpixel_nside {patch_nside} exceeds the map nside {nside}")
    if patch_nside & (patch_nside - 1):
        raise ConfigError(f"superpixel_nside {patch_nside} is not a power of two")
    shift = 2 * int(np.log2(nside // patch_nside))
    nest_low = harmonics.ring2nest(nside, pix) >> shift
    return harmonics.nest2ring(patch_nside, nest_low)


def patch_mean(field: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """Replace ``field`` by its mean over each patch of the integer map ``patches``."""
    sums = np.bincount(patches, weights=field)
    counts = np.bincount(patches)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    return means[patches]


def simulate_parametric_sky(
    sky: SkyModel,
    r: float,
    a_lens: float,
    spectra: CMBSpectra,
    nside: int,
    lmax: int,
    patches: Mapping[str, np.ndarray] | None = None,
) -> ParametricSky:
    """Draw a ``grf`` or ``true_patch`` sky with CMB (r, A_lens); deterministic in its seed."""
    seed, b_only = sky.seed, sky.b_modes_only
    alm_cmb = cmb_alm(spectra, r, a_lens, lmax, rng_for(seed, "cmb"), b_modes_only=b_only)
    dust, sync = sky.dust, sky.synchrotron
    if dust.temperature_k is None:
        raise ConfigError("the dust component of a parametric sky needs a temperature field")
    alm_d, alm_s = foreground_amplitude_alm(
        dust, sync, sky.rho_ds, lmax, rng_for(seed, "foreground_amplitudes"), b_only
    )
    cmb_qu = harmonics.synthesis(alm_cmb, nside, lmax, spin=2)
    dust_qu = harmonics.synthesis(alm_d, nside, lmax, spin=2)
    sync_qu = harmonics.synthesis(alm_s, nside, lmax, spin=2)
    if sky.envelope_amplitude > 0:
        envelope = galactic_envelope_map(nside, sky.envelope_amplitude, sky.envelope_scale)
        dust_qu *= envelope
        sync_qu *= envelope
    fields = {
        "beta_d": index_field_map(dust.beta, nside, lmax, rng_for(seed, "beta_d")),
        "temperature_d": index_field_map(
            dust.temperature_k, nside, lmax, rng_for(seed, "temperature_d")
        ),
        "beta_s": index_field_map(sync.beta, nside, lmax, rng_for(seed, "beta_s")),
    }
    if sky.kind == "true_patch":
        if patches is None:
            raise ConfigError("a true_patch sky needs patch maps")
        fields = {k: patch_mean(v, np.asarray(patches[k])) for k, v in fields.items()}
    layers = ()
    if sky.kind == "lognormal" and sky.lognormal is not None:
        dust_qu *= _lognormal_modulation(sky.lognormal, nside, lmax, rng_for(seed, "lognormal"))
    if sky.kind == "layered":
        layers = tuple(
            _dust_layer(sky, i, layer, nside, lmax) for i, layer in enumerate(sky.dust_layers)
        )
    if sky.kind == "correlated":
        for name, qu, strength in (
            ("beta_d", dust_qu, sky.amplitude_correlation[0]),
            ("beta_s", sync_qu, sky.amplitude_correlation[1]),
        ):
            amplitude = np.sqrt(qu[0] ** 2 + qu[1] ** 2)
            fields[name] = misspecified.correlate_with_amplitude(fields[name], amplitude, strength)
    t_min = min(f.min() for f in (fields["temperature_d"], *(t for _, _, t in layers)))
    if t_min < MIN_DUST_TEMPERATURE_K:
        raise ConfigError(
            f"dust temperature field reaches {t_min:.2f} K (< {MIN_DUST_TEMPERATURE_K} K): "
            "lower dust.temperature_k.amplitude or raise its mean"
        )
    return ParametricSky(
        cmb_alm=alm_cmb,
        cmb_qu=cmb_qu,
        dust_qu=dust_qu,
        sync_qu=sync_qu,
        beta_d=fields["beta_d"],
        temp_d_k=fields["temperature_d"],
        beta_s=fields["beta_s"],
        dust_freq_ref_ghz=float(dust.freq_ref_ghz),
        sync_freq_ref_ghz=float(sync.freq_ref_ghz),
        dust_layers=layers,
        sync_curvature=float(sky.sync_curvature) if sky.kind == "curved_synchrotron" else 0.0,
        sync_curvature_freq_ghz=float(sky.sync_curvature_freq_ghz),
    )


def _lognormal_modulation(spec: IndexField, nside: int, lmax: int, rng) -> np.ndarray:
    """exp(sigma g - sigma^2/2) of a unit-variance GRF g with C_l ~ l^gamma (l >= ell_min)."""
    cl = index_field_cl(1.0, spec.gamma, lmax, spec.ell_min)
    g = harmonics.synthesis(harmonics.gaussian_alm(cl, lmax, rng), nside, lmax, spin=0)[0]
    g = (g - g.mean()) / g.std()
    return misspecified.lognormal_modulation(g, spec.mean)


def _dust_layer(sky: SkyModel, i: int, layer: DustLayer, nside: int, lmax: int):
    """Layer ``i``: Q/U drawn independently from the dust spectrum (times weight^2, with
    the same Galactic envelope), and its own beta_d and T_d fields."""
    d = sky.dust
    rng = rng_for(sky.seed, f"dust_layer{i}")
    cl = layer.weight**2 * power_law_cl(d.amplitude_uk2, d.alpha, lmax)
    alm_e = harmonics.gaussian_alm(d.ee_over_bb * cl, lmax, rng)
    alm_b = harmonics.gaussian_alm(cl, lmax, rng)
    if sky.b_modes_only:
        alm_e = np.zeros_like(alm_e)
    qu = harmonics.synthesis(np.stack([alm_e, alm_b]), nside, lmax, spin=2)
    if sky.envelope_amplitude > 0:
        qu *= galactic_envelope_map(nside, sky.envelope_amplitude, sky.envelope_scale)
    beta = index_field_map(layer.beta, nside, lmax, rng_for(sky.seed, f"beta_d_layer{i}"))
    temp = index_field_map(
        layer.temperature_k, nside, lmax, rng_for(sky.seed, f"temperature_d_layer{i}")
    )
    return qu, beta, temp


def foreground_maps(sky: ParametricSky, freqs_ghz) -> np.ndarray:
    """Dust (all layers) + synchrotron Q/U at each frequency, ``[freq, 2, npix]`` uK_CMB."""
    nu = np.asarray(freqs_ghz, dtype=float)[:, None]
    layers = ((sky.dust_qu, sky.beta_d, sky.temp_d_k), *sky.dust_layers)
    dust = misspecified.layered_dust(
        [q for q, _, _ in layers],
        [b for _, b, _ in layers],
        [t for _, _, t in layers],
        freqs_ghz,
        sky.dust_freq_ref_ghz,
    )
    f_sync = misspecified.curved_synchrotron_sed(
        nu, sky.beta_s[None], sky.sync_curvature, sky.sync_freq_ref_ghz, sky.sync_curvature_freq_ghz
    )
    return dust + f_sync[:, None] * sky.sync_qu[None]
