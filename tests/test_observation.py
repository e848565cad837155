"""Maps that contain their noise (issue 29): an observation, analysed without truth.

Known answers: the observation's fit is the simulation path's fit of the same maps; an
observation inside the model is its own best fit; the parametric bootstrap around the fit
measures the statistical residual the simulation path measures around the truth; NILC
of the observed splits is the simulation path's NILC of that noise realisation, bit for
bit.
"""

import copy
import os
import subprocess
import sys

import healpy as hp
import numpy as np
import pytest
import yaml
from conftest import REPO, litebird_grf_problem, tiny_config, tiny_workflow_config

from bmodesep.config import check_consistency, validate_config
from bmodesep.core import harmonics
from bmodesep.core import maps as user_maps
from bmodesep.core.compsep import clustering, gridsearch
from bmodesep.core.compsep import likelihood as compsep
from bmodesep.core.simulate.cmb import cmb_alm
from bmodesep.errors import ConfigError
from bmodesep.products import io, sims
from bmodesep.settings import resolve_instrument
from bmodesep.stages import simulate as stage

NSIDE = 8
START = {"beta_d": 1.54, "temperature_d": 20.0, "beta_s": -3.0}
BOUNDS = {"beta_d": (0.5, 5.0), "temperature_d": (5.0, 100.0), "beta_s": (-6.0, -0.5)}


def _write_splits(folder, maps, freqs):
    """``maps[split, band, 2, npix]`` as one RING uK_CMB file per (split, band)."""
    folder.mkdir(parents=True, exist_ok=True)
    for s, split in enumerate(maps):
        for b, f in enumerate(freqs):
            hp.write_map(folder / f"s{s}_{f:g}.fits", split[b], column_units="uK_CMB")
    return str(folder / "s{split}_{freq}.fits")


# ---------------------------------------------------------------- the fit and its bootstrap
@pytest.fixture(scope="module")
def grf_problem():
    """A LiteBIRD-like GRF sky at nside 16 on 20% of the sky, 24 noise realisations, and
    an observation of it whose noise is of another seed."""
    zone, problem, noise = litebird_grf_problem(24)
    return zone, problem, problem.signal + noise(77)(0)


def _layout(zone, counts):
    patches = {
        p: clustering.kmeans_patches(zone, k, 0)
        for p, k in zip(compsep.PARAMETERS, counts, strict=True)
    }
    return compsep.cell_layout(patches, zone)


@pytest.mark.slow
def test_an_observation_inside_the_model_is_its_own_best_fit(grf_problem):
    """Maps made by the model (3 patches of known indices, no noise): the fit recovers
    the indices and the best-fit sky is the maps themselves."""
    zone, problem, _ = grf_problem
    layout = _layout(zone, (3, 1, 2))
    truth = np.array([1.45, 1.6, 1.7, 21.0, -3.1, -2.9])
    p = truth[layout.pixel_params]
    a = np.asarray(compsep.mixing_matrix(problem.model, p[:, 0], p[:, 1], p[:, 2]))
    rng = np.random.default_rng(3)
    comps = rng.normal(size=(3, 2, p.shape[0])) * np.array([0.5, 10.0, 3.0])[:, None, None]
    maps = np.einsum("pfi,isp->fsp", a, comps)
    obs = gridsearch.fit_observation(layout, problem._replace(signal=maps))
    np.testing.assert_allclose(np.asarray(obs.fit.params), truth, rtol=1e-6)
    np.testing.assert_allclose(obs.model, maps, rtol=0, atol=1e-8 * np.abs(maps).max())
    np.testing.assert_allclose(obs.components, comps, rtol=0, atol=1e-7 * np.abs(comps).max())
    fg = np.einsum("pfi,isp->fsp", a[..., 1:], comps[1:])
    np.testing.assert_allclose(obs.foreground_model, fg, rtol=0, atol=1e-8 * np.abs(fg).max())


@pytest.mark.slow
@pytest.mark.parametrize("counts", [(1, 1, 1), (8, 2, 2)])
def test_the_bootstrap_measures_the_simulations_statistical_residual(grf_problem, counts):
    """The parametric bootstrap around the observation's fit against the simulation
    path around the truth, over the same 24 noise realisations: the CMB variance of eq. 9
    agrees (the fits differ only in the indices they linearise about), and the bootstrap
    sky, inside the model, has no systematic residual."""
    zone, problem, observed = grf_problem
    layout = _layout(zone, counts)
    truth = gridsearch.evaluate_configuration(layout, problem)
    boot, obs = gridsearch.evaluate_observation(layout, problem._replace(signal=observed))
    assert boot.cmb_variance == pytest.approx(truth.cmb_variance, rel=0.03)
    assert boot.systematic_residual < 1e-12 * boot.cmb_variance
    assert truth.systematic_residual > 1e-6 * truth.cmb_variance  # the GRF sky is not the model
    # the realisations scatter around the observation's CMB, not around the true one
    offset = (boot.cmb - obs.components[0][None]).mean(axis=0)
    assert np.mean(offset**2) < 0.2 * boot.cmb_variance
    # the observation's fit is the fit of those maps from the configured start
    direct = gridsearch.fit_data(layout, problem, observed)
    np.testing.assert_allclose(np.asarray(obs.fit.params), np.asarray(direct.params), rtol=1e-12)


# ---------------------------------------------------------------- the r likelihood on data
@pytest.mark.parametrize("r_true", [0.0, 0.1])
def test_the_likelihood_of_an_observation_recovers_the_injected_r(spectra, r_true):
    """A full-sky noisy CMB map (lensed, with r_true): its own MASTER spectrum against
    r C_tens + C_lens + C_stat, C_stat from bootstrap realisations of the noise, gives
    r within 3 sigma of the truth over independent skies; the mean over skies too."""
    from bmodesep.core.rlike import residuals
    from bmodesep.core.rlike.spectra import BBEstimator

    nside, lmax, sigma_noise = 32, 64, 0.05  # uK per pixel: noise D_l ~ lensing BB at l ~ 40
    est = BBEstimator(lmin=4, lmax=lmax, bin_width=6)
    theory = residuals.theory_spectra(spectra, r_true, 1.0, est)
    grid = np.linspace(-0.1, 0.4, 1001)
    mask = np.ones(hp.nside2npix(nside))
    rng = np.random.default_rng(11)
    hats, sigmas = [], []
    for _ in range(8):
        alm = cmb_alm(spectra, r_true, 1.0, 3 * nside - 1, rng)
        cmb = harmonics.synthesis(alm, nside, 3 * nside - 1, spin=2)
        observed = cmb + sigma_noise * rng.normal(size=cmb.shape)
        boot = observed[None] + sigma_noise * rng.normal(size=(20, *cmb.shape))
        c_obs, c_stat = residuals.observation_spectra(observed, boot, mask, est)
        result = residuals.analyse_observation(grid, theory, c_obs, c_stat, est.modes(1.0))
        assert grid[1] < result.r_hat < grid[-2]
        hats.append(result.r_hat)
        sigmas.append(result.sigma_curvature)
    hats, sigmas = np.array(hats), np.array(sigmas)
    assert np.all(np.abs(hats - r_true) < 3 * sigmas), (hats, sigmas)
    assert abs(hats.mean() - r_true) < 3 * sigmas.mean() / np.sqrt(len(hats))
    # C_stat is the noise's white spectrum, as D_l band powers
    noise_cl = sigma_noise**2 * 4 * np.pi / hp.nside2npix(nside)
    expected = est.theory(np.full(lmax + 1, noise_cl))
    np.testing.assert_allclose(c_stat, expected, rtol=0.25)


# ---------------------------------------------------------------- stages
@pytest.fixture(scope="module")
def sosat(tmp_path_factory, spectra):
    """The tiny config's SO-SAT simulation (two splits) through the simulation path."""
    root = tmp_path_factory.mktemp("so")
    cfg = tiny_config(NSIDE)
    cfg["masks"]["source"] = "latitude"
    cfg["nilc"] = dict(cfg["nilc"], simulations=["so"], run=["joint"])
    cfg = validate_config(cfg)
    sims.write_spectra(root / "camb.h5", spectra, cfg)
    stage.sky(cfg, "so", root / "camb.h5", root / "sky.h5")
    stage.frequency_maps(cfg, "so", root / "sky.h5", root / "signal.h5")
    stage.noise(cfg, "so", root / "noise.h5")
    return root, cfg


def _observation_config(cfg, total, sim="so", seed=123):
    cfg = copy.deepcopy(cfg)
    cfg["skies"]["data"] = {"kind": "maps", "maps": {"total": total, "contains_noise": True}}
    cfg["simulations"][sim] = dict(cfg["simulations"][sim], sky="data", seed=seed)
    return validate_config(cfg)


def test_nilc_of_observed_splits_is_the_simulations_nilc_bit_for_bit(tmp_path, sosat):
    """SO-SAT split maps (signal + noise realisation 0 of each split) written to FITS and
    read as an observation: its signal product keeps each split, and NILC compresses them
    as one realisation, equal to the simulation path's realisation 0 bit for bit."""
    from bmodesep.stages import nilc

    root, cfg = sosat
    inst = resolve_instrument(cfg, "sosat")
    signal = sims.read_signal(root / "signal.h5", inst, NSIDE)
    noise = sims.read_noise(root / "noise.h5", inst, NSIDE)
    split_maps = signal["total_qu"][None] + noise["qu"][0]
    total = _write_splits(tmp_path / "data", split_maps, inst.frequencies_ghz)
    ocfg = _observation_config(cfg, total)
    files = user_maps.observation_paths(total, inst.frequencies_ghz, inst.splits)
    assert len(files) == 2 * inst.n_freq and files[inst.n_freq].endswith("s1_23.fits")
    stage.frequency_maps(ocfg, "so", None, tmp_path / "signal.h5", total=files)
    got = sims.read_signal(tmp_path / "signal.h5", inst, NSIDE)
    assert np.array_equal(got["observation_qu"], split_maps)
    assert np.array_equal(got["total_qu"], split_maps.mean(axis=0))
    stage.noise(ocfg, "so", tmp_path / "noise.h5")
    nilc.nilc_compress(cfg, "so", "joint", root / "signal.h5", root / "noise.h5", tmp_path / "a.h5")
    nilc.nilc_compress(
        ocfg, "so", "joint", tmp_path / "signal.h5", tmp_path / "noise.h5", tmp_path / "b.h5"
    )
    simulated = io.read_product(tmp_path / "a.h5", "nilc")["maps"]
    observed = io.read_product(tmp_path / "b.h5", "nilc")["maps"]
    assert observed.shape == (1, *simulated.shape[1:])
    assert np.array_equal(observed[0], simulated[0])
    # the simulation records the CMB it drew (the truth of its posteriors); a user's maps none
    attrs = io.read_product(tmp_path / "a.h5", "nilc").attrs
    assert (attrs["r_true"], attrs["a_lens_true"]) == (cfg["cmb"]["r"], cfg["cmb"]["a_lens"])
    assert not {"r_true", "a_lens_true"} & set(io.read_product(tmp_path / "b.h5", "nilc").attrs)
    from bmodesep.stages import export

    export.export_nilc(ocfg, "so", "joint", tmp_path / "b.h5", tmp_path / "b.fits")
    _, header = hp.read_map(tmp_path / "b.fits", field=0, h=True)
    assert dict(header)["REALIS"] == "observed"


def test_config_checks_of_observations(tmp_path):
    cfg = tiny_config(NSIDE)
    cfg["masks"]["source"] = "latitude"
    cfg["skies"]["data"] = {
        "kind": "maps",
        "maps": {"total": "d_{freq}.fits", "contains_noise": True, "cmb": "c.fits"},
    }
    cfg["simulations"]["obs"] = dict(cfg["simulations"]["so"], sky="data")
    cfg["compsep"]["simulations"] = ["lb", "obs"]
    cfg["nilc"] = dict(cfg["nilc"], simulations=["obs"], input="b")
    cfg["npe"] = dict(cfg["npe"], observed=[])
    with pytest.raises(ConfigError) as err:
        check_consistency(validate_config(cfg))
    text = str(err.value)
    for expected in (
        "skies.data.maps.total: 'd_{freq}.fits' needs a {split} placeholder",
        "skies.data.maps.cmb: maps that contain their noise are analysed without truth",
        "compsep.selection_from.obs: simulation obs's maps contain their noise",
        "rlike.spectrum: simulation obs's maps contain their noise",
        "nilc.input: simulation obs's maps contain their noise",
    ):
        assert expected in text, text
    cfg["skies"]["data"]["maps"] = {"total": "d_{split}_{freq}.fits", "contains_noise": True}
    cfg["compsep"]["selection_from"] = {"obs": "so", "lb": "obs"}
    cfg["rlike"] = dict(cfg["rlike"], spectrum="master")
    cfg["nilc"]["input"] = "qu"
    with pytest.raises(ConfigError) as err:
        check_consistency(validate_config(cfg))
    text = str(err.value)
    assert "compsep.selection_from.obs: 'so' is not another simulation of compsep" in text
    assert "compsep.selection_from.lb: only a simulation whose maps contain their noise" in text
    # one split of LiteBIRD: no cross-split spectra for SBI
    cfg["simulations"]["obs"]["instrument"] = "litebird"
    cfg["skies"]["data"]["maps"]["total"] = "d_{freq}.fits"
    cfg["compsep"]["selection_from"] = {"obs": "lb"}
    cfg["npe"] = dict(cfg["npe"], observed=["obs"], instrument="litebird")
    with pytest.raises(ConfigError, match="cross-spectra of 2 splits"):
        check_consistency(validate_config(cfg))


# ---------------------------------------------------------------- the workflow
@pytest.mark.slow
def test_the_workflow_separates_an_observation_with_a_simulations_selection(tmp_path, spectra):
    """LiteBIRD maps with their noise in them (the simulation lb's signal plus its noise
    realisation 0) next to lb itself: the observation takes lb's grid-search selection,
    every method fits it once and bootstraps around the fit, the r likelihood uses its own
    spectrum, and its maps are exported; its fits are lb's fits of realisation 0."""
    cfg = tiny_workflow_config()
    cfg["masks"]["source"] = "latitude"
    total = str(tmp_path / "data" / "s{split}_{freq}.fits")
    cfg["skies"]["data"] = {"kind": "maps", "maps": {"total": total, "contains_noise": True}}
    cfg["simulations"] = {
        "lb": cfg["simulations"]["lb"],
        "obs": dict(cfg["simulations"]["lb"], sky="data", seed=321),
    }
    cfg["compsep"] = dict(cfg["compsep"], simulations=["lb", "obs"], selection_from={"obs": "lb"})
    cfg["rlike"] = dict(cfg["rlike"], spectrum="master", bin_width=4)
    cfg["nilc"]["simulations"], cfg["npe"]["chunks"], cfg["npe"]["observed"] = [], 0, []
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(validate_config(cfg)))
    snakefile = str(REPO / "workflow" / "Snakefile")
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def snakemake(*targets):
        args = [sys.executable, "-m", "snakemake", "--snakefile", snakefile, "--cores", "2"]
        r = subprocess.run(
            [*args, *targets, "--configfile", "c.yaml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
        )
        assert r.returncode == 0, r.stderr[-3000:]

    # the observation: lb's maps plus its noise realisation 0 (LiteBIRD: one split)
    results = tmp_path / "results"
    snakemake("results/sims/lb/signal.h5", "results/sims/lb/noise.h5")
    inst = resolve_instrument(cfg, "litebird")
    signal = sims.read_signal(results / "sims/lb/signal.h5", inst, NSIDE)["total_qu"]
    noise = sims.read_noise(results / "sims/lb/noise.h5", inst, NSIDE)["qu"][0]  # [1 split..]
    _write_splits(tmp_path / "data", signal[None] + noise, inst.frequencies_ghz)
    targets = ["results/figures/obs/r_summary.csv", "results/figures/obs/r_likelihood.png"]
    targets += ["results/compsep/obs/fits/kmeans_residual.fits"]
    targets += [f"results/compsep/lb/GAL060_L/{m}.h5" for m in ("single", "kmeans")]
    snakemake(*targets)
    # no grid search of its own
    assert not (results / "compsep/obs/grid").exists()
    selection = io.read_product(results / "compsep/lb/grid/GAL060_L/selection.h5", "grid_selection")
    for method in ("single", "kmeans"):
        mine = io.read_product(results / f"compsep/obs/GAL060_L/{method}.h5", "compsep_fit")
        theirs = io.read_product(results / f"compsep/lb/GAL060_L/{method}.h5", "compsep_fit")
        assert mine.attrs["contains_noise"] and not theirs.attrs["contains_noise"]
        assert list(mine.attrs["configuration"]) == list(theirs.attrs["configuration"])
        # the observation's fit is lb's fit of the same maps (its realisation 0), to the
        # fits' convergence (one starts from compsep.start, the other from the noiseless fit)
        np.testing.assert_allclose(
            mine["observation/parameter_maps"], theirs["parameter_maps"][0], rtol=1e-6
        )
        assert float(mine["observation/nll"]) == pytest.approx(theirs["nll"][0], abs=1e-3)
        for k in range(3):
            scale = np.abs(theirs["components"][k]).max()
            np.testing.assert_allclose(
                mine["components"][k], theirs["components"][k], rtol=0, atol=1e-5 * scale
            )
    kmeans = io.read_product(results / "compsep/obs/GAL060_L/kmeans.h5", "compsep_fit")
    assert list(kmeans.attrs["configuration"]) == list(selection.attrs["best_configuration"])
    like = io.read_product(results / "rlike/obs/kmeans.h5", "r_likelihood")
    assert like.attrs["contains_noise"] and like.attrs["spectrum"] == "master"
    assert "cl_systematic_residual" not in like.data  # unknown without truth
    assert np.isfinite(like.attrs["r_hat"]) and like["likelihood"].max() == 1.0
    rows = (results / "figures/obs/r_summary.csv").read_text().splitlines()
    assert sorted(row.split(",")[0] for row in rows[1:]) == [
        "kmeans",
        "multires",
        "multires_table5",
        "single",
    ]
    # the exported statistical error map: the bootstrap's spread around the fit
    residual, header = hp.read_map(
        results / "compsep/obs/fits/kmeans_residual.fits", field=(0, 1), h=True
    )
    pix = kmeans["pixels"]
    spread = (kmeans["cmb_qu"] - kmeans["components"][0][None]).std(axis=0)
    assert np.array_equal(residual[:, pix], spread)
    assert dict(header)["TTYPE1"] == "Q_CMB_STD"
    params = hp.read_map(results / "compsep/obs/fits/kmeans_parameters.fits", field=(0, 1, 2))
    assert np.array_equal(params[:, pix], kmeans["observation/parameter_maps"])
