"""Frequency maps a user brings (issue 29): FITS reading, units, ordering, resolution, and
the sky kind ``maps`` against the simulation path it must reproduce."""

import copy
import os
import subprocess
import sys

import astropy.units as u
import healpy as hp
import numpy as np
import pytest
import yaml
from conftest import REPO, tiny_config, tiny_workflow_config

from bmodesep.config import validate_config
from bmodesep.core import harmonics
from bmodesep.core import maps as user_maps
from bmodesep.core.seds import T_CMB_K
from bmodesep.errors import ConfigError, DataError
from bmodesep.products import fits, io, sims
from bmodesep.settings import resolve_instrument
from bmodesep.stages import simulate as stage

NSIDE = 8


# ---------------------------------------------------------------- units
@pytest.mark.parametrize("freq", [27.0, 100.0, 353.0, 857.0])
def test_unit_factors_match_astropy(freq):
    cmb = u.thermodynamic_temperature(freq * u.GHz, T_CMB_K * u.K)
    rj = u.brightness_temperature(freq * u.GHz)  # K_RJ <-> specific intensity
    k_rj = (1 * u.K).to(u.MJy / u.sr, equivalencies=rj).to(u.uK, equivalencies=cmb).value
    assert user_maps.to_uk_cmb("K_RJ", freq) == pytest.approx(k_rj, rel=1e-12)
    assert user_maps.to_uk_cmb("uK_RJ", freq) == pytest.approx(k_rj * 1e-6, rel=1e-12)
    mjy = (1 * u.MJy / u.sr).to(u.uK, equivalencies=cmb).value
    assert user_maps.to_uk_cmb("MJy/sr", freq) == pytest.approx(mjy, rel=1e-12)
    assert user_maps.to_uk_cmb("Jy/sr", freq) == pytest.approx(mjy * 1e-6, rel=1e-12)
    assert user_maps.to_uk_cmb("K_CMB", freq) == 1e6
    assert user_maps.to_uk_cmb("uK_CMB", freq) == 1.0


@pytest.mark.parametrize(
    "text, unit",
    [("K_CMB", "K_CMB"), ("Kcmb", "K_CMB"), ("uK_CMB", "uK_CMB"), ("muK_CMB", "uK_CMB"),
     ("mK_CMB", "mK_CMB"), ("K_RJ", "K_RJ"), ("uK_RJ", "uK_RJ"), ("MJy/sr", "MJy/sr")],
)  # fmt: skip
def test_header_spellings(text, unit):
    assert user_maps.canonical_unit(text) == unit


@pytest.mark.parametrize("text", ["K", "uK", "Jy", "furlong"])
def test_ambiguous_or_unknown_units_are_refused(text):
    with pytest.raises(DataError, match="unit"):
        user_maps.canonical_unit(text)


def test_unit_resolution():
    assert user_maps.resolve_unit("Kcmb", None, "f") == "K_CMB"
    assert user_maps.resolve_unit(None, "uK_RJ", "f") == "uK_RJ"
    assert user_maps.resolve_unit("K_CMB", "K_CMB", "f") == "K_CMB"
    with pytest.raises(DataError, match="no unit"):
        user_maps.resolve_unit(None, None, "f.fits")
    with pytest.raises(DataError, match="header states K_RJ"):
        user_maps.resolve_unit("K_RJ", "K_CMB", "f.fits")
    with pytest.raises(DataError, match="needs a frequency"):
        user_maps.to_uk_cmb("K_RJ", None)


def test_band_paths():
    assert user_maps.band_paths("m_{freq}_{band}.fits", [40.0, 68.4, 402]) == [
        "m_40_0.fits",
        "m_68.4_1.fits",
        "m_402_2.fits",
    ]
    with pytest.raises(ConfigError, match="only"):
        user_maps.band_paths("m_{nu}.fits", [40.0])
    with pytest.raises(ConfigError, match="same file"):
        user_maps.band_paths("m.fits", [40.0, 50.0])


# ---------------------------------------------------------------- FITS files
def _qu(nside, seed=0):
    return np.random.default_rng(seed).standard_normal((2, harmonics.npix(nside)))


def test_fits_layouts_and_orderings(tmp_path):
    qu = _qu(NSIDE)
    # I, Q, U in NESTED order, units in the header
    nest = qu[:, hp.nest2ring(NSIDE, np.arange(qu.shape[1]))]
    path = tmp_path / "iqu_nest.fits"
    hp.write_map(path, [np.ones(qu.shape[1]), *nest], nest=True, column_units="K_CMB")
    got = fits.read_healpix_fits(path)
    assert got.ordering == "NESTED" and got.unit == "K_CMB" and got.nside == NSIDE
    assert np.array_equal(got.qu, qu)
    # Q, U named among other columns (Planck style), RING, no units
    path = tmp_path / "planck_like.fits"
    names = ["I_STOKES", "QQ_COV", "Q_STOKES", "U_STOKES"]
    hp.write_map(path, [qu[0] * 0, qu[0] ** 2, *qu], column_names=names)
    got = fits.read_healpix_fits(path)
    assert got.unit is None and np.array_equal(got.qu, qu)
    assert np.array_equal(fits.read_healpix_fits(path, fields=[3, 2]).qu, qu[::-1])
    # partial sky (explicit indices): the missing pixels UNSEEN
    part = qu.copy()
    part[:, :100] = hp.UNSEEN
    path = tmp_path / "partial.fits"
    hp.write_map(path, part, partial=True, column_units="uK_CMB")
    got = fits.read_healpix_fits(path)
    seen = user_maps.observed_pixels(got.qu)
    assert not seen[:100].any() and seen[100:].all()
    assert np.array_equal(got.qu[:, 100:], qu[:, 100:])


def test_unreadable_fits_files(tmp_path):
    with pytest.raises(DataError, match="missing map file"):
        fits.read_healpix_fits(tmp_path / "absent.fits")
    (tmp_path / "junk.fits").write_text("not a FITS file")
    with pytest.raises(DataError, match=r"junk\.fits"):
        fits.read_healpix_fits(tmp_path / "junk.fits")
    path = tmp_path / "four.fits"
    hp.write_map(path, np.zeros((4, harmonics.npix(NSIDE))), column_names=list("abcd"))
    with pytest.raises(DataError, match="set the fields key"):
        fits.read_healpix_fits(path)


# ---------------------------------------------------------------- resolution
def _fake_window(nside, lmax):
    ell = np.arange(lmax + 1)
    return np.exp(-((ell / (4.0 * nside)) ** 2))


@pytest.mark.parametrize("window", [False, True])
def test_resampling_matches_healpy(window, monkeypatch):
    # healpy's pixel-window tables are downloaded (not here): a stand-in window checks
    # that the ratio p_out / p_in is the one applied
    monkeypatch.setattr(user_maps, "pixel_window", _fake_window)
    nside_in, nside, lmax = 16, 8, 23
    qu = _qu(nside_in, 3)
    got = user_maps.resample_qu(qu, nside, lmax, window)
    alm = hp.map2alm([qu[0] * 0, *qu], lmax=lmax, iter=3)
    if window:
        ratio = _fake_window(nside, lmax) / _fake_window(nside_in, lmax)
        alm = [hp.almxfl(a, ratio) for a in alm]
    want = hp.alm2map(alm, nside, lmax=lmax, pol=True)[1:]
    assert np.allclose(got, want, atol=1e-12 * np.abs(want).max())
    assert user_maps.resample_qu(qu, nside_in, 47, window) is qu  # same nside: untouched


def test_an_unavailable_pixel_window_is_one_clear_error(monkeypatch):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(hp, "pixwin", offline)
    with pytest.raises(DataError, match="pixel window of nside 8 is not available"):
        user_maps.resample_qu(_qu(16), 8, 23, True)


def test_coverage_follows_the_pixels():
    seen = np.ones(harmonics.npix(16), bool)
    child = hp.nest2ring(16, 4 * 10 + 1)  # one sub-pixel of NESTED pixel 10 at nside 8
    seen[child] = False
    coarse = user_maps.coverage_at(seen, 8)
    assert np.flatnonzero(~coarse).tolist() == [hp.nest2ring(8, 10)]
    fine = user_maps.coverage_at(coarse, 16)
    assert (~fine).sum() == 4 and not fine[child]


# ---------------------------------------------------------------- the sky kind maps
@pytest.fixture(scope="module")
def simulated(tmp_path_factory, spectra):
    """The simulation path's products of the tiny config's LiteBIRD simulation."""
    root = tmp_path_factory.mktemp("sim")
    cfg = tiny_config(NSIDE)
    cfg["masks"]["source"] = "latitude"
    sims.write_spectra(root / "camb.h5", spectra, cfg)
    stage.sky(cfg, "lb", root / "camb.h5", root / "sky.h5")
    stage.frequency_maps(cfg, "lb", root / "sky.h5", root / "signal.h5")
    stage.noise(cfg, "lb", root / "noise.h5")
    inst = resolve_instrument(cfg, "litebird")
    signal = sims.read_signal(root / "signal.h5", inst, NSIDE, foreground=True)
    sky, _ = sims.read_sky(root / "sky.h5", NSIDE)
    signal.data["noise_qu"] = sims.read_noise(root / "noise.h5", inst, NSIDE)["qu"]
    return cfg, inst, signal, sky


def _write_bands(folder, maps, freqs, *, nest=False, unit="uK_CMB", factor=None, nside=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (m, f) in enumerate(zip(maps, freqs, strict=True)):
        m = m / (1.0 if factor is None else factor(f))
        if nest:
            m = m[:, hp.nest2ring(hp.npix2nside(m.shape[1]), np.arange(m.shape[1]))]
        hp.write_map(folder / f"band{i}_{f:g}.fits", m, nest=nest, column_units=unit)
    return str(folder / "band{band}_{freq}.fits")


def _maps_config(cfg, total, foregrounds=None, cmb=None, **spec):
    cfg = copy.deepcopy(cfg)
    cfg["skies"]["mine"] = {
        "kind": "maps",
        "maps": {"total": total, "foregrounds": foregrounds, "cmb": cmb, **spec},
    }
    cfg["simulations"]["lb"]["sky"] = "mine"
    return validate_config(cfg)


def _run_maps(cfg, folder, inst):
    spec = cfg["skies"]["mine"]["maps"]
    total = user_maps.band_paths(spec["total"], inst.frequencies_ghz)
    fgs = (
        user_maps.band_paths(spec["foregrounds"], inst.frequencies_ghz)
        if spec["foregrounds"]
        else None
    )
    stage.frequency_maps(cfg, "lb", None, folder / "signal.h5", total=total, foregrounds=fgs)
    return sims.read_signal(folder / "signal.h5", inst, NSIDE)


def test_maps_in_ring_and_uk_cmb_reproduce_the_simulation_bit_for_bit(tmp_path, simulated):
    cfg, inst, signal, sky = simulated
    freqs = inst.frequencies_ghz
    total = _write_bands(tmp_path / "total", signal["total_qu"], freqs)
    fgs = _write_bands(tmp_path / "fg", signal["foreground_qu"], freqs)
    hp.write_map(tmp_path / "cmb.fits", sky["cmb/qu"], column_units="uK_CMB")
    mcfg = _maps_config(cfg, total, fgs, str(tmp_path / "cmb.fits"))
    got = _run_maps(mcfg, tmp_path, inst)
    assert np.array_equal(got["total_qu"], signal["total_qu"])
    assert np.array_equal(got["foreground_qu"], signal["foreground_qu"])
    assert got["observed"].all()
    stage.sky(mcfg, "lb", None, tmp_path / "sky.h5", cmb=tmp_path / "cmb.fits")
    product, parametric = sims.read_sky(tmp_path / "sky.h5", NSIDE)
    assert parametric is None and np.array_equal(product["cmb/qu"], sky["cmb/qu"])
    # the noise is the instrument's, as for the simulation: the same products follow
    stage.masks(mcfg, "lb", tmp_path / "masks.h5", signal=tmp_path / "signal.h5")
    stage.masks(cfg, "lb", tmp_path / "masks_sim.h5")
    assert all(
        np.array_equal(a[k], b[k])
        for a, b in zip(
            sims.read_masks(tmp_path / "masks.h5", NSIDE),
            sims.read_masks(tmp_path / "masks_sim.h5", NSIDE),
            strict=True,
        )
        for k in a
    )


def test_nested_rj_maps_reproduce_the_simulation_to_rounding(tmp_path, simulated):
    cfg, inst, signal, _sky = simulated
    freqs = inst.frequencies_ghz
    total = _write_bands(
        tmp_path / "t",
        signal["total_qu"],
        freqs,
        nest=True,
        unit="K_RJ",
        factor=lambda f: user_maps.to_uk_cmb("K_RJ", f),
    )
    got = _run_maps(_maps_config(cfg, total), tmp_path, inst)
    assert "foreground_qu" not in got.data
    scale = np.abs(signal["total_qu"]).max()
    assert np.allclose(got["total_qu"], signal["total_qu"], rtol=1e-13, atol=1e-13 * scale)


def test_maps_at_a_higher_nside_are_band_limited_to_the_analysis_nside(tmp_path, simulated):
    cfg, inst, signal, _sky = simulated
    lmax = 3 * NSIDE - 1
    # the analysis-nside signal, up-sampled exactly (its alm), then read back down
    fine = np.stack(
        [
            harmonics.synthesis(harmonics.analysis(m, NSIDE, lmax, 2, 3), 2 * NSIDE, lmax, 2)
            for m in signal["total_qu"]
        ]
    )
    total = _write_bands(tmp_path / "fine", fine, inst.frequencies_ghz)
    got = _run_maps(_maps_config(cfg, total, pixel_window=False), tmp_path, inst)
    want = np.stack(
        [
            harmonics.synthesis(harmonics.analysis(m, NSIDE, lmax, 2, 3), NSIDE, lmax, 2)
            for m in signal["total_qu"]
        ]
    )
    # 3 Jacobi iterations of the nside-16 analysis recover band-limited alm to ~1e-5
    assert np.allclose(got["total_qu"], want, atol=2e-5 * np.abs(want).max())


def test_unseen_pixels_are_left_out_of_every_zone(tmp_path, simulated):
    cfg, inst, signal, _sky = simulated
    qu = signal["total_qu"].copy()
    qu[3, :, :50] = hp.UNSEEN  # one band misses 50 pixels
    total = _write_bands(tmp_path / "t", qu, inst.frequencies_ghz)
    mcfg = _maps_config(cfg, total)
    got = _run_maps(mcfg, tmp_path, inst)
    assert got["observed"][:50].sum() == 0 and got["observed"][50:].all()
    assert np.all(got["total_qu"][3, :, :50] == 0)
    stage.masks(mcfg, "lb", tmp_path / "masks.h5", signal=tmp_path / "signal.h5")
    gal, zones = sims.read_masks(tmp_path / "masks.h5", NSIDE)
    assert not any(m[:50].any() for m in (*gal.values(), *zones.values()))


# ---------------------------------------------------------------- noise from files
def test_variance_units_and_white_noise():
    assert user_maps.variance_unit("Kcmb^2") == "K_CMB"
    assert user_maps.variance_unit("(uK_RJ)**2") == "uK_RJ"
    with pytest.raises(DataError, match="square"):
        user_maps.variance_unit("K_CMB")
    var = np.array([np.full(4000, 4.0), np.full(4000, 9.0)])
    var[:, :10] = hp.UNSEEN
    noise = user_maps.noise_from_variance(var, np.random.default_rng(1))
    assert np.all(noise[:, :10] == 0)
    sd = noise[:, 10:].std(axis=1)
    assert np.allclose(sd, [2.0, 3.0], rtol=4 / np.sqrt(2 * 3990))  # 4 sigma of an sd
    with pytest.raises(DataError, match="negative"):
        user_maps.noise_from_variance(-var[:, 10:], np.random.default_rng(1))


def test_noise_paths_need_their_placeholders():
    paths = user_maps.noise_paths("n{band}_r{realisation}_s{split}.fits", [40.0, 50.0], 2, 2)
    assert paths[:3] == ["n0_r0_s0.fits", "n1_r0_s0.fits", "n0_r0_s1.fits"]
    assert len(paths) == 8 and len(set(paths)) == 8
    with pytest.raises(ConfigError, match="realisation"):
        user_maps.noise_paths("n{band}.fits", [40.0], 2, 1)
    with pytest.raises(ConfigError, match="split"):
        user_maps.noise_paths("n{band}_{realisation}.fits", [40.0], 2, 2)


def _noise_files(folder, noise_qu, freqs):
    """The simulation's noise realisations as one FITS file per (realisation, band)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, real in enumerate(noise_qu):
        for b, f in enumerate(freqs):
            hp.write_map(folder / f"n{i}_{f:g}.fits", real[0, b], column_units="uK_CMB")
    return str(folder / "n{realisation}_{freq}.fits")


def test_noise_simulation_files_are_the_noise_bit_for_bit(tmp_path, simulated):
    cfg, inst, signal, _sky = simulated
    freqs = inst.frequencies_ghz
    total = _write_bands(tmp_path / "t", signal["total_qu"], freqs)
    fgs = _write_bands(tmp_path / "fg", signal["foreground_qu"], freqs)
    pattern = _noise_files(tmp_path / "noise", signal["noise_qu"], freqs)
    mcfg = _maps_config(cfg, total, fgs, noise="simulations", noise_simulations=pattern)
    files = user_maps.noise_paths(pattern, freqs, 2, 1)
    mcfg["compsep"]["simulations"] = ["lb"]
    mcfg["masks"]["source"] = "latitude"
    _run_maps(mcfg, tmp_path, inst)
    with pytest.raises(ConfigError, match="needs --signal"):
        stage.noise(mcfg, "lb", tmp_path / "noise.h5", noise_files=files)
    stage.noise(mcfg, "lb", tmp_path / "noise.h5", noise_files=files, signal=tmp_path / "signal.h5")
    got = sims.read_noise(tmp_path / "noise.h5", inst, NSIDE)["qu"]
    assert np.array_equal(got, signal["noise_qu"])
    # component separation reads them (one realisation at a time) and weights each band
    # by their mean inverse variance
    from bmodesep.stages import compsep

    stage.masks(mcfg, "lb", tmp_path / "masks.h5", signal=tmp_path / "signal.h5")
    args = (mcfg, "lb", "GAL060_L", tmp_path / "masks.h5", tmp_path / "signal.h5")
    with pytest.raises(ConfigError, match="give --noise"):
        compsep.load_problem(*args)
    _, zone, problem = compsep.load_problem(*args, noise_path=tmp_path / "noise.h5")
    pix = np.flatnonzero(zone)
    assert np.array_equal(problem.noise(1), signal["noise_qu"][1, 0][:, :, pix])
    zone_noise = signal["noise_qu"][:, 0][..., pix]
    assert np.allclose(problem.ninv, 1 / np.mean(zone_noise**2, axis=(0, 2, 3)), rtol=1e-12)


def test_noise_from_variance_maps(tmp_path, simulated):
    cfg, inst, signal, _sky = simulated
    freqs = inst.frequencies_ghz
    total = _write_bands(tmp_path / "t", signal["total_qu"], freqs)
    (tmp_path / "var").mkdir()
    npx = harmonics.npix(NSIDE)
    for b, f in enumerate(freqs):  # Planck-like columns, K_CMB^2; U twice Q's variance
        cols = [np.ones(npx), np.full(npx, (b + 1) * 1e-12), np.full(npx, 2 * (b + 1) * 1e-12)]
        hp.write_map(
            tmp_path / "var" / f"v{f:g}.fits",
            cols,
            column_names=["II_COV", "QQ_COV", "UU_COV"],
            column_units="Kcmb^2",
        )
    pattern = str(tmp_path / "var" / "v{freq}.fits")
    cfg = copy.deepcopy(cfg)
    cfg["simulations"]["lb"]["noise_realisations"] = 40
    mcfg = _maps_config(cfg, total, noise="variance", variance=pattern)
    _run_maps(mcfg, tmp_path, inst)
    files = user_maps.band_paths(pattern, freqs)
    stage.noise(mcfg, "lb", tmp_path / "noise.h5", variance=files, signal=tmp_path / "signal.h5")
    qu = sims.read_noise(tmp_path / "noise.h5", inst, NSIDE)["qu"][:, 0]  # [real, band, 2, pix]
    var = qu.var(axis=(0, 3))  # [band, QU] in uK_CMB^2
    want = np.outer(np.arange(1, 16), [1.0, 2.0])
    n = qu.shape[0] * npx
    assert np.allclose(var, want, rtol=5 * np.sqrt(2 / n))  # 5 sigma of a variance
    # a variance map with holes where the maps are observed: refused, nothing written
    holed = hp.read_map(files[3], field=(0, 1, 2))
    holed[1:, :7] = hp.UNSEEN
    hp.write_map(files[3], holed, column_names=["II_COV", "QQ_COV", "UU_COV"],
                 column_units="Kcmb^2", overwrite=True)  # fmt: skip
    out = tmp_path / "holed" / "noise.h5"
    with pytest.raises(DataError, match="leave 7 pixels the maps observe without noise"):
        stage.noise(mcfg, "lb", out, variance=files, signal=tmp_path / "signal.h5")
    assert not out.parent.exists() or not any(out.parent.iterdir())


# ---------------------------------------------------------------- bad input, through the CLI
def _cli(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "bmodesep", "simulate", "frequency_maps", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    "case, message",
    [
        ("wrong_units", "header states K_RJ, the units key K_CMB"),
        ("missing_band", "missing map file"),
        ("mixed_nside", "the bands of a sky must share one nside"),
        ("no_units", "the header states no unit and the config sets no units key"),
        ("all_unseen", "no observed pixel"),
    ],
)
def test_bad_maps_give_one_line_and_write_nothing(tmp_path, simulated, case, message):
    cfg, inst, signal, _sky = simulated
    qu, freqs = signal["total_qu"].copy(), inst.frequencies_ghz
    unit, spec = "K_RJ" if case == "wrong_units" else "uK_CMB", {}
    if case == "wrong_units":
        spec["units"] = "K_CMB"
    if case == "no_units":
        unit = None
    if case == "all_unseen":
        qu[5] = hp.UNSEEN
    pattern = _write_bands(tmp_path / "maps", qu, freqs, unit=unit)
    paths = user_maps.band_paths(pattern, freqs)
    if case == "missing_band":
        os.remove(paths[4])
    if case == "mixed_nside":
        hp.write_map(paths[2], np.zeros((2, harmonics.npix(2 * NSIDE))), overwrite=True)
    mcfg = _maps_config(cfg, pattern, **spec)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(mcfg))
    out = tmp_path / "out" / "signal.h5"
    r = _cli(
        ["--config", "c.yaml", "--simulation", "lb", "--total", *paths, "--output", out], tmp_path
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bmodesep: error:"), r.stderr
    assert message in lines[0]
    assert not out.exists() and not any((tmp_path / "out").glob("*"))


def test_config_checks_of_maps_skies():
    cfg = tiny_config(NSIDE)
    cfg["skies"]["mine"] = {"kind": "maps", "maps": {"total": "m_{nu}.fits", "units": "K"}}
    cfg["simulations"]["lb"]["sky"] = "mine"
    cfg["compsep"]["simulations"] = ["lb"]
    from bmodesep.config import check_consistency

    with pytest.raises(ConfigError) as err:
        check_consistency(validate_config(cfg))
    text = str(err.value)
    for expected in (
        "skies.mine.maps.units: ambiguous unit 'K'",
        "skies.mine.maps.total: 'm_{nu}.fits' has placeholders ['nu']",
        "masks.source: synthetic masks threshold",
        "skies.mine.maps.foregrounds: compsep.simulations lists lb",
        "skies.mine.maps.cmb: compsep.simulations lists lb",
    ):
        assert expected in text, text


# ---------------------------------------------------------------- the workflow on maps
@pytest.mark.slow
def test_the_workflow_runs_component_separation_on_a_users_maps(tmp_path, simulated):
    """A tiny config whose LiteBIRD sky is FITS files (NESTED, K_RJ) with noise-simulation
    files: the workflow reads them, separates them with every method, infers r and
    exports the maps as FITS; its signal is the simulation's to rounding, its CMB truth
    and noise the same."""
    _cfg, inst, signal, sky = simulated
    freqs = inst.frequencies_ghz
    data = tmp_path / "data"
    total = _write_bands(
        data / "total", signal["total_qu"], freqs, nest=True, unit="K_RJ",
        factor=lambda f: user_maps.to_uk_cmb("K_RJ", f),
    )  # fmt: skip
    fgs = _write_bands(data / "fg", signal["foreground_qu"], freqs)
    hp.write_map(data / "cmb.fits", sky["cmb/qu"] * 1e-6, column_units="K_CMB")
    cfg = tiny_workflow_config()
    noise = _noise_files(data / "noise", signal["noise_qu"], freqs)
    cfg["skies"]["mine"] = {
        "kind": "maps",
        "maps": {
            "total": total,
            "foregrounds": fgs,
            "cmb": str(data / "cmb.fits"),
            "noise": "simulations",
            "noise_simulations": noise,
        },
    }
    cfg["simulations"] = {"lb": dict(cfg["simulations"]["lb"], sky="mine")}
    cfg["masks"]["source"] = "latitude"
    cfg["compsep"]["simulations"] = ["lb"]
    cfg["nilc"]["simulations"], cfg["npe"]["chunks"], cfg["npe"]["observed"] = [], 0, []
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(validate_config(cfg)))
    snakefile = str(REPO / "workflow" / "Snakefile")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    targets = ["results/figures/lb/r_summary.csv", "export_all"]
    args = [sys.executable, "-m", "snakemake", "--snakefile", snakefile, "--cores", "2", *targets]
    r = subprocess.run(
        [*args, "--configfile", "c.yaml"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    results = tmp_path / "results"
    got = sims.read_signal(results / "sims/lb/signal.h5", inst, NSIDE, foreground=True)
    scale = np.abs(signal["total_qu"]).max()
    assert np.allclose(got["total_qu"], signal["total_qu"], rtol=1e-13, atol=1e-13 * scale)
    assert np.array_equal(got["foreground_qu"], signal["foreground_qu"])
    assert np.array_equal(
        sims.read_noise(results / "sims/lb/noise.h5", inst, NSIDE)["qu"], signal["noise_qu"]
    )
    truth, _ = sims.read_sky(results / "sims/lb/sky.h5", NSIDE)
    assert np.allclose(truth["cmb/qu"], sky["cmb/qu"], rtol=1e-14, atol=1e-14)
    rows = (results / "figures/lb/r_summary.csv").read_text().splitlines()
    assert sorted(row.split(",")[0] for row in rows[1:]) == [
        "kmeans",
        "multires",
        "multires_table5",
        "single",
    ]
    # the exported maps: healpy reads them; they hold the products' values
    fit = io.read_product(results / "compsep/lb/GAL060_L/single.h5", "compsep_fit")
    pix, comps = fit["pixels"], fit["components"]
    assert np.array_equal(comps[0], fit["cmb_qu"][0])  # the CMB row is the kept CMB map
    outside = np.setdiff1d(np.arange(harmonics.npix(NSIDE)), pix)
    exported = results / "compsep/lb/fits"
    maps, header = hp.read_map(exported / "single_cmb.fits", field=(0, 1), h=True)
    header = dict(header)
    assert np.array_equal(maps[:, pix], comps[0]) and np.all(maps[:, outside] == hp.UNSEEN)
    assert header["TUNIT1"] == "uK_CMB" and header["COORDSYS"] == "G"
    assert header["ORDERING"] == "RING" and header["NSIDE"] == NSIDE
    assert header["BMSSTAGE"] == "export_maps" and header["METHOD"] == "single"
    fg = hp.read_map(exported / "single_foregrounds.fits", field=(0, 1, 2, 3))
    assert np.array_equal(fg[:, pix], comps[1:].reshape(4, -1))
    params, header = hp.read_map(exported / "single_parameters.fits", field=(0, 1, 2), h=True)
    assert np.array_equal(params[:, pix], fit["parameter_maps"][0])
    assert dict(header)["TUNIT2"] == "K"
    residual = hp.read_map(exported / "single_residual.fits", field=(0, 1))
    assert np.array_equal(residual[:, pix], fit["systematic_components"][0])
    patches = hp.read_map(exported / "kmeans_patches.fits", field=(0, 1, 2))
    kmeans = io.read_product(results / "compsep/lb/GAL060_L/kmeans.h5", "compsep_fit")
    for k, name in enumerate(("beta_d", "temperature_d", "beta_s")):
        assert np.array_equal(patches[k][pix], kmeans[f"patches/{name}"][pix])


def test_config_checks_of_noise_files():
    from bmodesep.config import check_consistency

    cfg = tiny_config(NSIDE)
    cfg["masks"]["source"] = "latitude"
    cfg["skies"]["v"] = {"kind": "maps", "maps": {"total": "m{band}.fits", "noise": "variance"}}
    cfg["skies"]["s"] = {
        "kind": "maps",
        "maps": {
            "total": "m{band}.fits",
            "noise": "simulations",
            "noise_simulations": "n{band}.fits",
        },
    }
    cfg["simulations"]["lb"]["sky"] = "v"
    cfg["simulations"]["so"]["sky"] = "s"
    with pytest.raises(ConfigError) as err:
        check_consistency(validate_config(cfg))
    text = str(err.value)
    assert "skies.v.maps.variance: noise 'variance' needs the pattern of its files" in text
    assert "skies.s.maps.noise_simulations: 'n{band}.fits' needs a {split} placeholder" in text


def test_nilc_runs_on_a_users_partial_maps_only_through_a_mask(tmp_path, spectra):
    """NILC of a maps sky with unobserved pixels: refused without nilc.mask (its full-sky
    covariances would mix in the zeros), run with a mask the coverage has cut."""
    from bmodesep.stages import nilc

    cfg = tiny_config(NSIDE)
    cfg["masks"]["source"] = "latitude"
    sims.write_spectra(tmp_path / "camb.h5", spectra, cfg)
    stage.sky(cfg, "so", tmp_path / "camb.h5", tmp_path / "sky.h5")
    stage.frequency_maps(cfg, "so", tmp_path / "sky.h5", tmp_path / "sim_signal.h5")
    inst = resolve_instrument(cfg, "sosat")
    qu = sims.read_signal(tmp_path / "sim_signal.h5", inst, NSIDE)["total_qu"].copy()
    equator = np.flatnonzero(
        np.abs(hp.pix2ang(NSIDE, np.arange(qu.shape[-1]))[0] - np.pi / 2) < 0.1
    )
    qu[:, :, equator] = hp.UNSEEN
    total = _write_bands(tmp_path / "t", qu, inst.frequencies_ghz)
    mcfg = copy.deepcopy(cfg)
    mcfg["skies"]["mine"] = {"kind": "maps", "maps": {"total": total}}
    mcfg["simulations"]["so"]["sky"] = "mine"
    mcfg["nilc"] = dict(mcfg["nilc"], simulations=["so"], run=["joint"])
    mcfg = validate_config(mcfg)
    paths = user_maps.band_paths(total, inst.frequencies_ghz)
    stage.frequency_maps(mcfg, "so", None, tmp_path / "signal.h5", total=paths)
    stage.noise(mcfg, "so", tmp_path / "noise.h5")
    stage.masks(mcfg, "so", tmp_path / "masks.h5", signal=tmp_path / "signal.h5")
    args = ("so", "joint", tmp_path / "signal.h5", tmp_path / "noise.h5")
    with pytest.raises(DataError, match=f"{equator.size} of 768 pixels are not observed"):
        nilc.nilc_compress(mcfg, *args, tmp_path / "nilc.h5")
    assert not (tmp_path / "nilc.h5").exists()
    masked = validate_config(dict(mcfg, nilc=dict(mcfg["nilc"], mask="GAL040")))
    nilc.nilc_compress(masked, *args, tmp_path / "nilc.h5", masks=tmp_path / "masks.h5")
    product = io.read_product(tmp_path / "nilc.h5", "nilc")
    assert product.attrs["mask"] == "GAL040"
    # its standard output: the component B maps of realisation 0, splits averaged
    from bmodesep.stages import export

    export.export_nilc(masked, "so", "joint", tmp_path / "nilc.h5", tmp_path / "b.fits")
    names = [f"B_{c.upper()}" for c in product.attrs["components"]]
    maps, header = hp.read_map(tmp_path / "b.fits", field=tuple(range(len(names))), h=True)
    header = dict(header)
    assert [header[f"TTYPE{i + 1}"] for i in range(len(names))] == names
    assert names[0] == "B_CMB" and header["COMPRESS"] == "joint" and header["SPLITS"] == 2
    assert np.array_equal(maps, product["maps"][0].mean(axis=0))
    with pytest.raises(DataError, match="not 'hilc_joint'"):
        export.export_nilc(masked, "so", "hilc_joint", tmp_path / "nilc.h5", tmp_path / "c.fits")


def test_zones_join_into_full_sky_maps_with_patches_numbered_across_zones():
    from bmodesep.core import export

    joined = export.join_zones([np.array([0, 2]), np.array([5])], [np.array([1.0, 2.0]), [3.0]], 6)
    assert joined.tolist() == [1.0, hp.UNSEEN, 2.0, hp.UNSEEN, hp.UNSEEN, 3.0]
    a = np.array([0, 1, -1, -1, 1, -1])
    b = np.array([-1, -1, 0, 1, -1, -1])
    labels = export.join_patch_labels([a, b])
    assert labels.tolist() == [0, 1, 2, 3, 1, hp.UNSEEN]


@pytest.mark.slow
def test_sbi_and_the_power_spectrum_likelihood_run_on_a_users_maps(tmp_path, spectra):
    """SO-SAT-like FITS maps (one per band, with the instrument's noise added): the
    workflow compresses them with NILC and infers r with an estimator trained for the same
    instrument (npe_observed) and with the power-spectrum likelihood."""
    cfg = tiny_workflow_config()
    cfg["masks"]["source"] = "latitude"
    sims.write_spectra(tmp_path / "camb.h5", spectra, cfg)
    stage.sky(cfg, "so", tmp_path / "camb.h5", tmp_path / "sky.h5")
    stage.frequency_maps(cfg, "so", tmp_path / "sky.h5", tmp_path / "signal.h5")
    inst = resolve_instrument(cfg, "sosat")
    qu = sims.read_signal(tmp_path / "signal.h5", inst, NSIDE)["total_qu"]
    total = _write_bands(tmp_path / "data", qu, inst.frequencies_ghz, unit="uK_CMB")
    cfg["skies"]["mine"] = {"kind": "maps", "maps": {"total": total}}
    cfg["simulations"] = {"so": dict(cfg["simulations"]["so"], sky="mine")}
    cfg["compsep"]["simulations"] = []
    cfg["npe"] = dict(cfg["npe"], test_sets={}, training_fractions=[])
    cfg["npe"]["ps_likelihood"] = dict(cfg["npe"]["ps_likelihood"], sets=[])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(validate_config(cfg)))
    targets = [
        "results/npe/joint/observed/so.h5",
        "results/npe/ps_likelihood/observed/so.h5",
        "results/nilc/so/fits/joint_b.fits",
    ]
    snakefile = str(REPO / "workflow" / "Snakefile")
    args = [sys.executable, "-m", "snakemake", "--snakefile", snakefile, "--cores", "2", *targets]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [*args, "--configfile", "c.yaml"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    results = tmp_path / "results"
    got = sims.read_signal(results / "sims/so/signal.h5", inst, NSIDE)
    assert np.array_equal(got["total_qu"], qu)  # RING, uK_CMB, same nside: bit for bit
    observed = io.read_product(results / "npe/joint/observed/so.h5", "npe_observed")
    assert observed["samples"].shape == (1, 50, 13)
    assert np.all(np.isfinite(observed["samples"]))
    like = io.read_product(results / "npe/ps_likelihood/observed/so.h5", "ps_likelihood")
    assert like["samples"].shape[:2] == (1, 50)
    assert (results / "nilc/so/fits/joint_b.fits").stat().st_size > 0
