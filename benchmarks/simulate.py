"""Simulation benchmarks (issue 2), and the GRF sky the other benchmarks start from."""

from __future__ import annotations

from typing import Any, NamedTuple

from benchmarks.common import baseline_fields, register, time_operation, timing_fields

GRF_SKY = {
    "kind": "grf",
    "seed": 1,
    "dust": {
        "beta": {"mean": 1.54, "amplitude": 0.3},
        "temperature_k": {"mean": 20.0, "amplitude": 60.0},
    },
    "synchrotron": {"beta": {"mean": -3.0, "amplitude": 0.25}},
    "rho_ds": 0.1,
}


class SimulationSetup(NamedTuple):
    config: dict  # the validated config: one sky, one instrument, one simulation "sim"
    sky: Any  # its sky, a bmodesep.core.simulate.sky.SkyModel
    instrument: Any  # bmodesep.core.simulate.instrument.Instrument
    spectra: Any  # bmodesep.core.simulate.cmb.CMBSpectra up to lmax
    lmax: int

    def draw(self, nside: int):
        """The sky's realisation (``ParametricSky``) with the config's r and A_lens."""
        from bmodesep.core.simulate.sky import simulate_parametric_sky

        cmb = self.config["cmb"]
        return simulate_parametric_sky(
            self.sky, cmb["r"], cmb["a_lens"], self.spectra, nside, self.lmax
        )


def simulation_setup(instrument_name: str, nside: int, sky_overrides: dict) -> SimulationSetup:
    """The GRF sky (updated by ``sky_overrides``) seen by the preset ``instrument_name``."""
    from bmodesep.config import validate_config
    from bmodesep.core.simulate.cmb import compute_camb_spectra
    from bmodesep.settings import cosmology, resolve_instrument, sky_model

    config = validate_config(
        {
            "skies": {"sky": GRF_SKY | sky_overrides},
            "instruments": {"inst": instrument_name},
            "simulations": {"sim": {"sky": "sky", "instrument": "inst", "nside": nside}},
        }
    )
    lmax = 3 * nside - 1
    spectra = compute_camb_spectra(cosmology(config["cmb"]), lmax)  # cached for the runs
    return SimulationSetup(
        config, sky_model(config["skies"]["sky"]), resolve_instrument(config, "inst"), spectra, lmax
    )


def simulation_benchmark(name, instrument_name, nside, sky_overrides, args) -> dict[str, Any]:
    from bmodesep.config import simulation_analysis_iterations
    from bmodesep.core import harmonics
    from bmodesep.core.simulate.instrument import observe_signal, simulate_noise
    from bmodesep.core.simulate.sky import foreground_maps

    setup = simulation_setup(instrument_name, nside, sky_overrides)
    config, inst, lmax = setup.config, setup.instrument, setup.lmax
    n_iter = simulation_analysis_iterations(config["simulations"]["sim"])

    def op():
        sky = setup.draw(nside)
        fg = foreground_maps(sky, inst.frequencies_ghz)
        observe_signal(inst, sky.cmb_alm, sky.cmb_qu, fg, nside, lmax, n_iter)
        simulate_noise(inst, nside, lmax, seed=7, realisation=0)

    timing = time_operation(op, args.repeats)
    out = {
        "name": name,
        **timing_fields(timing),
        "nside": nside,
        "bands": inst.n_freq,
        "splits": inst.splits,
        "analysis_iterations": n_iter,
    }
    if not args.no_baseline:
        with harmonics.backend("healpy"):
            base = time_operation(op, args.repeats)
        out |= baseline_fields("same simulation through healpy transforms", base, timing)
    return out


@register("simulate-litebird")
def bench_simulate_litebird(args):
    """nside 64, 15 LiteBIRD bands, Q/U: CMB + GRF foregrounds + white noise, one realisation."""
    return simulation_benchmark("simulate-litebird", "litebird", 64, {}, args)


@register("simulate-sosat")
def bench_simulate_sosat(args):
    """nside 128, 8 SO-SAT bands x 2 splits: beams, high-pass, 1/f noise, B maps."""
    return simulation_benchmark("simulate-sosat", "sosat", 128, {"b_modes_only": True}, args)


@register("maps-read")
def bench_maps_read(args):
    """15 LiteBIRD bands of user FITS maps (nside 512, NESTED, K_RJ) read, to nside 64."""
    # I/Q/U float32 files converted to uK_CMB and resampled (lmax 191) as frequency_maps does
    import tempfile

    import healpy as hp
    import numpy as np

    from bmodesep.core import maps as user_maps
    from bmodesep.products import fits
    from bmodesep.settings import instrument_from_spec, preset

    nside_in, nside, lmax = 512, 64, 191
    freqs = instrument_from_spec("litebird", preset("litebird")).frequencies_ghz
    folder = tempfile.mkdtemp(prefix="bmodesep-maps-read-")
    rng = np.random.default_rng(0)
    npix = hp.nside2npix(nside_in)
    ring2nest = hp.nest2ring(nside_in, np.arange(npix))
    paths = []
    for f in freqs:  # white noise of 1 uK_RJ: any content costs the same to read and resample
        maps = rng.standard_normal((3, npix)).astype(np.float32) * np.float32(1e-6)
        path = f"{folder}/band_{f:g}.fits"
        hp.write_map(path, maps[:, ring2nest], nest=True, column_units="K_RJ", dtype=np.float32)
        paths.append(path)

    def op():
        for path, f in zip(paths, freqs, strict=True):
            m = fits.read_healpix_fits(path)
            user_maps.to_analysis(m.qu, m.unit, f, nside, lmax, False)

    def baseline():  # healpy alone: read (reordered to RING), map2alm iter 3, alm2map
        for path, f in zip(paths, freqs, strict=True):
            iqu = hp.read_map(path, field=(0, 1, 2), dtype=np.float64)
            alm = hp.map2alm(iqu * user_maps.to_uk_cmb("K_RJ", f), lmax=lmax, iter=3)
            hp.alm2map(alm, nside, lmax=lmax)

    try:
        timing = time_operation(op, args.repeats)
        out = {
            "name": "maps-read",
            **timing_fields(timing),
            "nside_in": nside_in,
            "nside": nside,
            "bands": len(freqs),
        }
        if not args.no_baseline:
            base = time_operation(baseline, args.repeats)
            what = "healpy read_map + map2alm(iter=3) + alm2map of I, Q, U"
            out |= baseline_fields(what, base, timing)
        return out
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
