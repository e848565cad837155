"""Grid search over patch counts (kabalan2025 secs. 2.3-2.5, 5.1) and its stage commands."""

import os
import shutil
import subprocess
import sys

import h5py
import healpy as hp
import numpy as np
import pytest
from conftest import bmodesep_command, config_file, tiny_config

from bmodesep.core.compsep import clustering, fitting, gridsearch, selection
from bmodesep.core.compsep import likelihood as compsep
from bmodesep.core.simulate.instrument import simulate_noise, white_noise_sigma_per_pixel
from bmodesep.errors import ConfigError, DataError
from bmodesep.products import io, sims
from bmodesep.settings import instrument_from_spec, preset
from bmodesep.stages import compsep as separate

LITEBIRD = instrument_from_spec("litebird", preset("litebird"))


@pytest.mark.parametrize("n, p", [(10, 3), (7, 7), (3200, 32), (5, 8), (1, 1)])
def test_grid_is_sliced_evenly_whether_or_not_p_divides_n(n, p):
    covered = []
    sizes = []
    for i in range(p):
        lo, hi = gridsearch.chunk_bounds(n, p, i)
        covered += list(range(lo, hi))
        sizes.append(hi - lo)
    assert covered == list(range(n))
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ConfigError, match="chunk 3 does not exist among 3"):
        gridsearch.chunk_bounds(10, 3, 3)


def test_grid_points_are_the_product():
    pts = gridsearch.grid_points({"beta_d": [10, 20], "temperature_d": [1], "beta_s": [1, 5]})
    assert [tuple(p) for p in pts] == [(10, 1, 1), (10, 1, 5), (20, 1, 1), (20, 1, 5)]


@pytest.mark.slow
def test_grid_search_selects_the_true_patch_configuration():
    """kabalan2025 sec. 5.1 at CI size: a true-patch sky plus LiteBIRD noise, nside 32."""
    from benchmarks.simulate import simulation_setup
    from bmodesep.core.simulate.sky import foreground_maps

    nside = 32
    # the GRF sky of the benchmarks; its spectral index maps are replaced below
    setup = simulation_setup("litebird", nside, {})
    inst, lmax = setup.instrument, setup.lmax
    zone = hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2] > 0.6
    truth = gridsearch.GridPoint(8, 2, 2)
    patches = {
        p: clustering.kmeans_patches(zone, k, 0)
        for p, k in zip(compsep.PARAMETERS, truth, strict=True)
    }
    rng = np.random.default_rng(1)
    values = {
        "beta_d": 1.54 + 0.15 * rng.standard_normal(8),
        "temperature_d": 20 + 3 * rng.standard_normal(2),
        "beta_s": -3 + 0.15 * rng.standard_normal(2),
    }
    sky = setup.draw(nside)
    maps = {}
    for p, default in (("beta_d", 1.54), ("temperature_d", 20.0), ("beta_s", -3.0)):
        maps[p] = np.full(zone.size, default)
        maps[p][zone] = values[p][patches[p][zone]]
    sky = sky._replace(beta_d=maps["beta_d"], temp_d_k=maps["temperature_d"], beta_s=maps["beta_s"])
    pix = np.flatnonzero(zone)
    fg = foreground_maps(sky, inst.frequencies_ghz)[:, :, pix]
    problem = gridsearch.Problem(
        compsep.SpectralModel(inst.frequencies_ghz),
        fg + sky.cmb_qu[None][:, :, pix],
        fg,
        lambda i: simulate_noise(inst, nside, lmax, 3, i).qu[0][:, :, pix],
        8,
        1.0 / white_noise_sigma_per_pixel(inst, nside) ** 2,
        {"beta_d": 1.54, "temperature_d": 20.0, "beta_s": -3.0},
        {"beta_d": (0.5, 5), "temperature_d": (5, 100), "beta_s": (-6, -0.5)},
        fitting.FitOptions(),
    )
    points = gridsearch.grid_points(
        {"beta_d": [4, 8, 16], "temperature_d": [1, 2, 4], "beta_s": [1, 2, 4]}
    )
    cache = {}

    def pmap(k):
        if k not in cache:
            cache[k] = clustering.kmeans_patches(zone, k, 0)
        return cache[k]

    layouts = gridsearch.pad_layouts(
        [
            compsep.cell_layout(
                {p: pmap(k) for p, k in zip(compsep.PARAMETERS, pt, strict=True)}, zone
            )
            for pt in points
        ]
    )
    results = [gridsearch.evaluate_configuration(lay, problem) for lay in layouts]
    assert all(r.converged.all() for r in results)
    var = np.array([r.cmb_variance for r in results])
    syst = np.array([r.systematic_residual for r in results])
    criteria = selection.Criteria(var, syst)
    best_mse, _ = selection.select(criteria, selection.Rule("variance_plus_systematic"))
    best_thr, honoured = selection.select(criteria, selection.Rule("threshold", 1e-4))
    assert points[best_mse] == truth
    assert points[best_thr] == truth and honoured
    # the true configuration is the only one that leaves no systematic residual
    assert syst[points.index(truth)] < 1e-3 * np.sort(syst)[1]
    # eq. 9 alone sees no deterministic residual: it keeps the right K_beta_d
    best_var, _ = selection.select(criteria, selection.Rule("variance"))
    assert points[best_var].beta_d == truth.beta_d


@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory, spectra):
    """Simulation products of the tiny config's LiteBIRD simulation at nside 16."""
    from bmodesep.stages import simulate

    root = tmp_path_factory.mktemp("compsep")
    cfg = tiny_config(nside=16)
    cfg["compsep"] = dict(
        cfg["compsep"],
        simulations=["lb"],
        noise_realisations=3,
        chunks=2,
        grid=dict(cfg["compsep"]["grid"], beta_d=[2, 4], temperature_d=[1], beta_s=[1, 2]),
    )
    sims.write_spectra(root / "camb.h5", spectra, cfg)
    simulate.sky(cfg, "lb", root / "camb.h5", root / "sky.h5")
    simulate.masks(cfg, "lb", root / "masks.h5", sky=root / "sky.h5")
    simulate.frequency_maps(cfg, "lb", root / "sky.h5", root / "signal.h5")
    (root / "patches").mkdir()
    separate.kmeans_patches(cfg, "lb", "GAL020_U", root / "masks.h5", patch_files(root))
    return root, cfg


def patch_files(root) -> list:
    """The stage fixture's K-means patch files, in increasing K (as the workflow names them)."""
    return [root / "patches" / f"K{k}.h5" for k in (1, 2, 4)]


@pytest.mark.slow
def test_patch_files_are_cached_per_zone_k_and_seed(stage_inputs):
    root, _cfg = stage_inputs
    _, zones = sims.read_masks(root / "masks.h5", 16)
    maps = separate.read_patch_files(patch_files(root), zones["GAL020_U"])
    assert sorted(maps) == [1, 2, 4]
    for k, path in zip((1, 2, 4), patch_files(root), strict=True):
        assert maps[k].max() + 1 == k
        assert io.read_product(path, "patch_map").attrs["zone"] == "GAL020_U"


def run_chunk(root, cfg, index, output, sky=None):
    """One grid chunk of the GAL020_U zone of the stage fixture."""
    separate.grid_chunk(
        cfg,
        "lb",
        "GAL020_U",
        index,
        root / "masks.h5",
        root / "signal.h5",
        patch_files(root),
        output,
        sky,
    )


def killed_on_second_call(real, calls: list):
    """``real``, counting its calls in ``calls``, killed (KeyboardInterrupt) on the second."""

    def dies_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("job killed")
        return real(*a, **k)

    return dies_on_second


@pytest.mark.slow
def test_interrupted_chunk_resumes_without_recomputing(stage_inputs, monkeypatch):
    root, cfg = stage_inputs
    args = ("lb", "GAL020_U", 0, root / "masks.h5", root / "signal.h5", patch_files(root))
    out = root / "chunk0.h5"
    real = gridsearch.evaluate_configuration
    calls = []
    dies_on_second = killed_on_second_call(real, calls)

    monkeypatch.setattr(gridsearch, "evaluate_configuration", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        separate.grid_chunk(cfg, *args, out)
    assert not out.exists()
    assert len(list(root.glob("chunk0.h5.parts/grid_point*.h5"))) == 1
    # a checkpoint left by a run with another config is discarded, never mixed in
    other = dict(cfg, compsep=dict(cfg["compsep"], fit=dict(cfg["compsep"]["fit"], rtol=1e-9)))
    calls.clear()
    monkeypatch.setattr(gridsearch, "evaluate_configuration", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        separate.grid_chunk(other, *args, out)
    assert len(calls) == 2  # configuration 0 was recomputed under the other config
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        separate.grid_chunk(cfg, *args, out)
    assert len(calls) == 2 and not out.exists()  # and again under the original one
    calls.clear()
    monkeypatch.setattr(
        gridsearch, "evaluate_configuration", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    separate.grid_chunk(cfg, *args, out)
    assert len(calls) == 1  # chunk 0 of 2 holds configurations 0 and 1; 0 was done
    chunk = io.read_product(out, "grid_chunk")
    assert chunk["index"].tolist() == [0, 1]
    assert not (root / "chunk0.h5.parts").exists()
    run_chunk(root, cfg, 1, root / "chunk1.h5")
    separate.grid_select(cfg, "lb", "GAL020_U", [root / "chunk1.h5", out], root / "sel.h5")
    sel = io.read_product(root / "sel.h5", "grid_selection")
    assert "r_hat" not in sel.data  # without the sky and the spectra: no residual spectra
    assert sel["configuration"].tolist() == [[2, 1, 1], [2, 1, 2], [4, 1, 1], [4, 1, 2]]
    best = sel.attrs["best_index"]
    # the default rule, the paper's: least variance with systematic <= 1e-2 variance, or
    # (no configuration eligible at this size) the least ratio, flagged
    ratio = sel["systematic_residual"] / sel["cmb_variance"]
    eligible = ratio <= 1e-2
    score = np.where(eligible, sel["cmb_variance"], np.inf)
    expected = int(np.argmin(score)) if eligible.any() else int(np.argmin(ratio))
    assert sel.attrs["rule"] == "threshold" and best == expected
    assert bool(sel.attrs["threshold_honoured"]) == bool(eligible.any())
    with pytest.raises(DataError, match="cover configurations"):
        separate.grid_select(cfg, "lb", "GAL020_U", [out], root / "sel2.h5")


def test_checkpoints_of_another_input_are_discarded(stage_inputs, tmp_path, monkeypatch):
    """Issue 25: a chunk killed after one checkpoint, then rerun after its signal file was
    replaced (as Snakemake reruns a job whose input changed), recomputes everything: the
    result equals a clean run on the new input, never a mix of old and new rows."""
    root, cfg = stage_inputs
    signal = tmp_path / "signal.h5"
    shutil.copyfile(root / "signal.h5", signal)
    args = ("lb", "GAL020_U", 0, root / "masks.h5", signal, patch_files(root))
    out = tmp_path / "chunk0.h5"
    real = gridsearch.evaluate_configuration
    calls = []
    dies_on_second = killed_on_second_call(real, calls)

    monkeypatch.setattr(gridsearch, "evaluate_configuration", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        separate.grid_chunk(cfg, *args, out)
    assert len(list(tmp_path.glob("chunk0.h5.parts/grid_point*.h5"))) == 1
    with h5py.File(signal, "a") as f:  # the input changes between the two attempts
        f[sims.TOTAL_QU][...] *= 1.001
    calls.clear()
    monkeypatch.setattr(
        gridsearch, "evaluate_configuration", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    separate.grid_chunk(cfg, *args, out)
    assert len(calls) == 2  # configuration 0 recomputed: its checkpoint was of the old input
    clean = tmp_path / "clean.h5"
    separate.grid_chunk(cfg, *args, clean)
    resumed, fresh = io.read_product(out, "grid_chunk"), io.read_product(clean, "grid_chunk")
    for name in fresh.data:
        np.testing.assert_array_equal(resumed[name], fresh[name], err_msg=name)


@pytest.mark.slow
def test_chunk_spread_over_two_devices_matches_one_device(stage_inputs, tmp_path):
    """Multi-GPU inside one job: the realisations sharded over two (CPU) JAX devices."""
    root, cfg = stage_inputs
    run_chunk(root, cfg, 1, tmp_path / "one.h5")
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    command = bmodesep_command(
        *("compsep", "grid_chunk", "--config", config_file(cfg, tmp_path)),
        *("--simulation", "lb", "--zone", "GAL020_U", "--chunk", "1"),
        *("--masks", root / "masks.h5", "--signal", root / "signal.h5"),
        *("--patches", *patch_files(root)),
    )
    two = subprocess.run(
        [*command, "--output", str(tmp_path / "two.h5"), "--devices", "2"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert two.returncode == 0, two.stderr
    assert "on 2 JAX device(s)" in two.stdout
    one, two = (io.read_product(tmp_path / f, "grid_chunk") for f in ("one.h5", "two.h5"))
    # 3 realisations on 2 devices: one padding entry, dropped again
    assert two["nll"].shape == one["nll"].shape == (2, 3)
    for field in ("cmb_variance", "systematic_residual", "nll", "spatial_variance"):
        np.testing.assert_allclose(two[field], one[field], rtol=1e-7, err_msg=field)
    three = subprocess.run(
        [*command, "--output", str(tmp_path / "three.h5"), "--devices", "3"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert three.returncode != 0
    assert "3 JAX devices requested, but JAX sees 2 (cpu)" in three.stderr
    assert not (tmp_path / "three.h5").exists()


def test_shard_over_devices_places_one_share_per_device():
    code = (
        "import jax.numpy as jnp\n"
        "from bmodesep.core.compsep.gridsearch import shard_over_devices\n"
        "x = shard_over_devices({'a': jnp.arange(5.0)}, 2)['a']\n"
        "print(x.shape, len(x.sharding.device_set),"
        " sorted(s.data.shape[0] for s in x.addressable_shards))\n"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(6,) 2 [3, 3]"


def test_grid_chunks_with_residual_spectra_give_r_hat_per_configuration(stage_inputs, tmp_path):
    root, cfg = stage_inputs
    chunks = [tmp_path / f"chunk{i}.h5" for i in range(2)]
    for i, chunk in enumerate(chunks):
        run_chunk(root, cfg, i, chunk, root / "sky.h5")
    separate.grid_select(cfg, "lb", "GAL020_U", chunks, tmp_path / "sel.h5", root / "camb.h5")
    sel = io.read_product(tmp_path / "sel.h5", "grid_selection")
    lmax = 2 * 16
    assert sel["total_residual_cl"].shape == (4, lmax - 1)  # l = 2..lmax
    assert np.all(sel["total_residual_cl"] > 0)
    assert sel["r_hat"].shape == (4,) and np.all(np.isfinite(sel["r_hat"]))
    from bmodesep.core.rlike import likelihood as rlike

    camb = sims.read_spectra(root / "camb.h5")
    ell = np.arange(2, lmax + 1)
    total, syst = sel["total_residual_cl"][3], sel["systematic_cl"][3]
    direct = rlike.analyse(
        np.linspace(-0.01, 0.05, 3001),
        camb.cl("BB", 0.0, 1.0)[ell] + total,
        camb.tensor_r1[2, ell],
        camb.lensed_scalar[2, ell],
        np.clip(total - syst, 0, None),
        rlike.mode_counts(ell, np.mean(zone_mask(root))),
    )
    assert sel["r_hat"][3] == pytest.approx(direct.r_hat)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kmeans", "multires", "multires_table5", "single"])
def test_method_outputs(stage_inputs, method, tmp_path):
    root, cfg = stage_inputs
    if method == "kmeans" and not (root / "sel.h5").exists():
        for i in range(2):
            run_chunk(root, cfg, i, root / f"chunk{i}.h5")
        separate.grid_select(
            cfg, "lb", "GAL020_U", [root / "chunk0.h5", root / "chunk1.h5"], root / "sel.h5"
        )
    out = tmp_path / f"{method}.h5"
    separate.compsep_fit(
        cfg,
        "lb",
        "GAL020_U",
        method,
        root / "masks.h5",
        root / "signal.h5",
        out,
        patch_files(root),
        root / "sel.h5",
    )
    p = io.read_product(out, "compsep_fit")
    n_zone = p["pixels"].size
    assert p["cmb_qu"].shape == (3, 2, n_zone)
    assert p["parameter_maps"].shape == (3, 3, n_zone)
    assert p["systematic_components"].shape == (3, 2, n_zone)
    assert p["converged"].all()
    for name in compsep.PARAMETERS:
        assert p[f"patches/{name}"].shape == (hp.nside2npix(16),)
    if method == "single":
        assert p.attrs["configuration"].tolist() == [1, 1, 1]
        assert np.ptp(p["parameter_maps"][0, 0]) == 0
    if method.startswith("multires"):  # Table 4 / Table 5 (GAL020: beta_s at nside 2 / 4)
        zone = p["patches/beta_d"] >= 0
        expected = clustering.multires_patches(zone, {"multires": 2, "multires_table5": 4}[method])
        np.testing.assert_array_equal(p["patches/beta_s"], expected)
        assert p["patches/temperature_d"].max() == 0  # T_d: one patch in GAL020
    # the CMB is recovered: the residual is far below the CMB itself
    _, sky = sims.read_sky(root / "sky.h5", 16)
    cmb_true = sky.cmb_qu[:, p["pixels"]]
    resid = p["cmb_qu"] - cmb_true[None]
    assert np.mean(resid**2) < 0.1 * np.mean(cmb_true**2)


def test_unknown_method_is_refused(stage_inputs, tmp_path):
    root, cfg = stage_inputs
    with pytest.raises(ConfigError, match=r"unknown method 'multires_table9'.*multires_table5"):
        separate.compsep_fit(
            cfg,
            "lb",
            "GAL020_U",
            "multires_table9",
            root / "masks.h5",
            root / "signal.h5",
            tmp_path / "x.h5",
        )
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("spectrum", ["fsky", "master"])
def test_r_likelihood_of_a_perfect_reconstruction_gives_back_the_simulated_r(
    stage_inputs, tmp_path, spectrum
):
    """No residual at all: C_obs is the theory spectrum and r-hat is the simulated r."""
    from bmodesep.stages import rlike as estimate_r

    root, cfg = stage_inputs
    cfg = dict(cfg, rlike=dict(cfg["rlike"], spectrum=spectrum))
    out = tmp_path / "single.h5"
    separate.compsep_fit(
        cfg, "lb", "GAL020_U", "single", root / "masks.h5", root / "signal.h5", out
    )
    fit = io.read_product(out, "compsep_fit")
    product, _ = sims.read_sky(root / "sky.h5", 16)
    perfect = {k: io.Dataset(v, fit.units[k]) for k, v in fit.data.items()}
    true_cmb = product["cmb/qu"][:, fit["pixels"]]
    perfect["cmb_qu"] = io.Dataset(np.broadcast_to(true_cmb, fit["cmb_qu"].shape).copy(), "uK_CMB")
    perfect["systematic_components"] = io.Dataset(
        np.zeros_like(fit["systematic_components"]), "uK_CMB"
    )
    io.write_product(
        tmp_path / "perfect.h5",
        "compsep_fit",
        perfect,
        io.provenance(cfg, 0, "test"),
        fit.attrs | {"method": "single"},
    )
    for path, method in ((tmp_path / "perfect.h5", "perfect"), (out, "single")):
        estimate_r.r_likelihood(
            cfg,
            "lb",
            "single",
            root / "sky.h5",
            root / "camb.h5",
            [path],
            tmp_path / f"r_{method}.h5",
        )
    perfect_r = io.read_product(tmp_path / "r_perfect.h5", "r_likelihood")
    assert np.all(perfect_r["cl_total_residual"] == 0)
    step = np.diff(perfect_r["r_grid"])[0]  # the answer is exact to the grid's resolution
    assert perfect_r.attrs["r_hat"] == pytest.approx(cfg["cmb"]["r"], abs=0.5 * step)
    assert perfect_r["likelihood"].max() == 1.0
    real = io.read_product(tmp_path / "r_single.h5", "r_likelihood")
    assert np.all(real["cl_total_residual"] > 0)
    assert real["r_hat_per_realisation"].shape == (3,)
    assert real.attrs["fsky_union"] == pytest.approx(np.mean(zone_mask(root)), rel=1e-12)
    assert real.attrs["spectrum"] == spectrum
    n_elements = {"fsky": 31, "master": 4}[spectrum]  # l = 2..32, or bands of 10 from l = 2
    assert real["ell"].shape == real["cl_total_residual"].shape == (n_elements,)
    assert real["zones/configuration"].tolist() == [[1, 1, 1]]
    assert real["zones/r_hat"][0] == pytest.approx(real.attrs["r_hat"])  # one zone: the union
    assert real["zones/total_bb_power"].shape == (1, 3)
    with pytest.raises(DataError, match="holds method 'single', expected 'kmeans'"):
        estimate_r.r_likelihood(
            cfg, "lb", "kmeans", root / "sky.h5", root / "camb.h5", [out], tmp_path / "bad.h5"
        )


def zone_mask(root):
    _, zones = sims.read_masks(root / "masks.h5", 16)
    return zones["GAL020_U"]


@pytest.mark.slow
def test_screened_search_selects_what_the_exhaustive_grid_selects(stage_inputs, tmp_path):
    """Issue 28: pass 1 (noiseless fits, predictions), the screen, pass 2 over the
    candidates only, and the selection from measured values, against the exhaustive grid
    of the same zone; resumable pieces and the search recorded in the selection."""
    root, cfg = stage_inputs
    grid = dict(cfg["compsep"]["grid"], search="screened", margin=0.1)
    screened = dict(cfg, compsep=dict(cfg["compsep"], grid=grid))
    common = (root / "masks.h5", root / "signal.h5", patch_files(root))
    for i in range(2):
        separate.grid_screen_chunk(
            screened, "lb", "GAL020_U", i, *common, tmp_path / f"s{i}.h5", root / "sky.h5"
        )
    pass1 = [tmp_path / f"s{i}.h5" for i in range(2)]
    separate.grid_screen(
        screened, "lb", "GAL020_U", pass1, tmp_path / "screen.h5", root / "camb.h5"
    )
    screen = io.read_product(tmp_path / "screen.h5", "grid_screen")
    assert screen["configuration"].tolist() == [[2, 1, 1], [2, 1, 2], [4, 1, 1], [4, 1, 2]]
    assert screen["predicted_cmb_variance"].shape == (4,)
    candidates = np.flatnonzero(screen["candidate"])
    assert candidates.size >= 1 and screen["candidate"][screen.attrs["best_predicted_index"]]
    measured = []
    for i in range(2):
        out = tmp_path / f"c{i}.h5"
        separate.grid_chunk(
            screened,
            "lb",
            "GAL020_U",
            i,
            *common,
            out,
            root / "sky.h5",
            screen=tmp_path / "screen.h5",
        )
        measured += io.read_product(out, "grid_chunk")["index"].tolist()
    assert sorted(measured) == candidates.tolist()  # the candidates, split over the jobs
    chunks = [tmp_path / f"c{i}.h5" for i in range(2)]
    with pytest.raises(ConfigError, match="needs the zone's screen"):
        separate.grid_select(screened, "lb", "GAL020_U", chunks, tmp_path / "x.h5")
    separate.grid_select(
        screened,
        "lb",
        "GAL020_U",
        chunks,
        tmp_path / "sel.h5",
        root / "camb.h5",
        screen=tmp_path / "screen.h5",
    )
    sel = io.read_product(tmp_path / "sel.h5", "grid_selection")
    # the exhaustive grid of the same zone
    full = [tmp_path / f"e{i}.h5" for i in range(2)]
    for i, chunk in enumerate(full):
        run_chunk(root, cfg, i, chunk, root / "sky.h5")
    separate.grid_select(cfg, "lb", "GAL020_U", full, tmp_path / "esel.h5", root / "camb.h5")
    exhaustive = io.read_product(tmp_path / "esel.h5", "grid_selection")
    assert list(sel.attrs["best_configuration"]) == list(exhaustive.attrs["best_configuration"])
    np.testing.assert_allclose(
        sel["cmb_variance"], exhaustive["cmb_variance"][candidates], rtol=1e-6
    )
    # the prediction of eq. 9 against the measurement (3 realisations: loose)
    np.testing.assert_allclose(
        screen["predicted_cmb_variance"], exhaustive["cmb_variance"], rtol=0.5
    )
    assert sel.attrs["search"] == "screened" and exhaustive.attrs["search"] == "exhaustive"
    assert sel.attrs["configurations"] == 4 and sel.attrs["measured"] == candidates.size
    assert sel.attrs["fits_fraction"] == pytest.approx((4 + candidates.size * 4) / 16)
    assert exhaustive.attrs["fits_fraction"] == 1.0
    # a screen of another grid is refused by name
    other = dict(grid, beta_d=[2, 4, 8])
    with pytest.raises(DataError, match="the screen covers 4 configurations, the grid has 6"):
        separate.grid_chunk(
            dict(cfg, compsep=dict(cfg["compsep"], grid=other)),
            "lb",
            "GAL020_U",
            0,
            *common,
            tmp_path / "bad.h5",
            root / "sky.h5",
            screen=tmp_path / "screen.h5",
        )
    assert not (tmp_path / "bad.h5").exists()


@pytest.mark.slow
def test_a_pass_2_job_without_candidates_hides_nothing(stage_inputs, tmp_path):
    """One candidate, two pass-2 jobs: the empty chunk must not drop the residual spectra
    (and r-hat) of the other from the selection."""
    root, cfg = stage_inputs
    grid = dict(cfg["compsep"]["grid"], search="screened", margin=0.0)
    screened = dict(
        cfg,
        compsep=dict(
            cfg["compsep"], grid=grid, selection={**cfg["compsep"]["selection"], "rule": "variance"}
        ),
    )
    common = (root / "masks.h5", root / "signal.h5", patch_files(root))
    pass1 = [tmp_path / f"s{i}.h5" for i in range(2)]
    for i, out in enumerate(pass1):
        separate.grid_screen_chunk(screened, "lb", "GAL020_U", i, *common, out, root / "sky.h5")
    screen = tmp_path / "screen.h5"
    separate.grid_screen(screened, "lb", "GAL020_U", pass1, screen, root / "camb.h5")
    assert io.read_product(screen, "grid_screen")["candidate"].sum() == 1
    chunks = [tmp_path / f"c{i}.h5" for i in range(2)]
    for i, out in enumerate(chunks):
        separate.grid_chunk(
            screened, "lb", "GAL020_U", i, *common, out, root / "sky.h5", screen=screen
        )
    sizes = sorted(io.read_product(c, "grid_chunk")["index"].size for c in chunks)
    assert sizes == [0, 1]
    separate.grid_select(
        screened, "lb", "GAL020_U", chunks, tmp_path / "sel.h5", root / "camb.h5", screen=screen
    )
    sel = io.read_product(tmp_path / "sel.h5", "grid_selection")
    assert sel["total_residual_cl"].shape[0] == 1 and np.isfinite(sel["r_hat"]).all()


def test_an_interrupted_pass_1_resumes_without_recomputing(stage_inputs, tmp_path, monkeypatch):
    from bmodesep.core.compsep import screening

    root, cfg = stage_inputs
    grid = dict(cfg["compsep"]["grid"], search="screened")
    screened = dict(cfg, compsep=dict(cfg["compsep"], grid=grid, chunks=1))
    args = ("lb", "GAL020_U", 0, root / "masks.h5", root / "signal.h5", patch_files(root))
    out = tmp_path / "s0.h5"
    real, calls = screening.predict_configuration, []
    monkeypatch.setattr(screening, "predict_configuration", killed_on_second_call(real, calls))
    with pytest.raises(KeyboardInterrupt):
        separate.grid_screen_chunk(screened, *args, out)
    assert not out.exists()
    assert len(list(tmp_path.glob("s0.h5.parts/screen_point*.h5"))) == 1
    calls.clear()
    monkeypatch.setattr(
        screening, "predict_configuration", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    separate.grid_screen_chunk(screened, *args, out)
    assert len(calls) == 3  # 4 configurations, the first one kept from the killed run
    assert io.read_product(out, "grid_screen_chunk")["index"].tolist() == [0, 1, 2, 3]
    assert not (tmp_path / "s0.h5.parts").exists()


def test_pass_1_draws_the_statistical_residual_only_for_r_aware(stage_inputs, tmp_path):
    """The predicted statistical BB (16 residual maps and spectra per configuration, about
    half of pass 1) is drawn only where the rule reads it: r_aware against the statistical
    residual; the other rules' screens have the exact systematic BB alone."""
    root, cfg = stage_inputs
    grid = dict(cfg["compsep"]["grid"], search="screened")
    common = (root / "masks.h5", root / "signal.h5", patch_files(root))
    tables = {}
    for rule in ("threshold", "r_aware"):
        sel = dict(cfg["compsep"]["selection"], rule=rule, reference="statistical")
        stage = dict(cfg, compsep=dict(cfg["compsep"], grid=grid, chunks=1, selection=sel))
        out, screen = tmp_path / f"{rule}_s0.h5", tmp_path / f"{rule}_screen.h5"
        separate.grid_screen_chunk(stage, "lb", "GAL020_U", 0, *common, out, root / "sky.h5")
        separate.grid_screen(stage, "lb", "GAL020_U", [out], screen, root / "camb.h5")
        tables[rule] = io.read_product(screen, "grid_screen")
    assert "predicted_statistical_cl" not in tables["threshold"].data
    assert tables["r_aware"]["predicted_statistical_cl"].shape[0] == 4
    for rule in tables:  # the same fits and systematic spectra either way
        assert tables[rule]["systematic_cl"].shape[0] == 4
    np.testing.assert_array_equal(
        tables["threshold"]["predicted_cmb_variance"], tables["r_aware"]["predicted_cmb_variance"]
    )
    assert tables["r_aware"].attrs["rule"] == "r_aware"
    # a screen without the statistical BB cannot be read as r_aware's
    table = dict(tables["threshold"].data)
    rule = selection.Rule("r_aware", reference="statistical")
    stage = dict(cfg, compsep=dict(cfg["compsep"], grid=grid))
    criteria = separate.predicted_criteria(stage, "lb", table, root / "camb.h5", 0.1)
    with pytest.raises(ConfigError, match="statistical reference needs"):
        selection.select(criteria, rule)


@pytest.mark.slow
def test_one_job_covers_several_zones(stage_inputs, tmp_path):
    """Issue 28 item 4: a compsep job takes every zone of its simulation (one JAX start-up
    per job); its products are those of the one-zone jobs, its per-zone inputs matched to
    their zones by what the products record, in whatever order they come."""
    root, cfg = stage_inputs
    zones = ["GAL020_U", "GAL020_L"]
    common = (root / "masks.h5", root / "signal.h5")
    patches = [tmp_path / f"{z}_K{k}.h5" for z in zones for k in (1, 2, 4)]
    separate.kmeans_patches(cfg, "lb", zones, root / "masks.h5", patches)
    for mine, alone in zip(patches[:3], patch_files(root), strict=True):
        np.testing.assert_array_equal(
            io.read_product(mine, "patch_map")["labels"],
            io.read_product(alone, "patch_map")["labels"],
        )
    assert io.read_product(patches[3], "patch_map").attrs["zone"] == "GAL020_L"
    chunks = {z: [tmp_path / f"{z}_c{i}.h5" for i in range(2)] for z in zones}
    for i in range(2):
        outs = [chunks[z][i] for z in zones]
        separate.grid_chunk(cfg, "lb", zones, i, *common, patches[::-1], outs, root / "sky.h5")
    selections = [tmp_path / f"{z}_sel.h5" for z in zones]
    every_chunk = chunks["GAL020_L"] + chunks["GAL020_U"]
    separate.grid_select(cfg, "lb", zones, every_chunk, selections, root / "camb.h5")
    alone = [tmp_path / f"alone{i}.h5" for i in range(2)]
    for i, chunk in enumerate(alone):
        run_chunk(root, cfg, i, chunk, root / "sky.h5")
    separate.grid_select(cfg, "lb", "GAL020_U", alone, tmp_path / "alone.h5", root / "camb.h5")
    together = io.read_product(selections[0], "grid_selection")
    one = io.read_product(tmp_path / "alone.h5", "grid_selection")
    np.testing.assert_array_equal(together["cmb_variance"], one["cmb_variance"])
    np.testing.assert_array_equal(together["r_hat"], one["r_hat"])
    lower = io.read_product(selections[1], "grid_selection")
    assert lower.attrs["zone"] == "GAL020_L" and lower["cmb_variance"].shape == (4,)
    assert not np.allclose(lower["cmb_variance"], together["cmb_variance"])  # another zone
    fits = [tmp_path / f"{z}_kmeans.h5" for z in zones]
    separate.compsep_fit(
        cfg, "lb", zones, "kmeans", *common, fits, patches=patches, selection=selections[::-1]
    )
    for zone_name, fit, sel in zip(zones, fits, selections, strict=True):
        product = io.read_product(fit, "compsep_fit")
        chosen = io.read_product(sel, "grid_selection").attrs["best_configuration"]
        assert product.attrs["zone"] == zone_name and product["converged"].all()
        assert list(product.attrs["configuration"]) == list(chosen)
    # a zone without its inputs, or outputs not one per zone: refused before any output
    bad = [tmp_path / "bad_U.h5", tmp_path / "bad_L.h5"]
    with pytest.raises(DataError, match="no patch files of zone GAL020_L among the 3 given"):
        separate.grid_chunk(cfg, "lb", zones, 0, *common, patch_files(root), bad, root / "sky.h5")
    with pytest.raises(DataError, match="no grid chunks of zone GAL020_L"):
        separate.grid_select(cfg, "lb", zones, chunks["GAL020_U"], bad, root / "camb.h5")
    with pytest.raises(ConfigError, match="1 output files for 2 zone"):
        separate.compsep_fit(cfg, "lb", zones, "single", *common, tmp_path / "bad.h5")
    assert not any(p.exists() for p in bad) and not (tmp_path / "bad.h5").exists()


def test_a_patch_count_above_the_zone_pixels_is_one_patch_per_pixel(stage_inputs, tmp_path, caplog):
    """The paper's grid reaches K_beta_d = 5,000 in zones of fewer pixels at nside 64: such
    a K is the per-pixel configuration, said in the log and in the patch file."""
    root, cfg = stage_inputs
    grid = dict(cfg["compsep"]["grid"], beta_d=[2, 100000])
    big = dict(cfg, compsep=dict(cfg["compsep"], grid=grid))
    files = [tmp_path / f"K{k}.h5" for k in (1, 2, 100000)]
    separate.kmeans_patches(big, "lb", "GAL020_U", root / "masks.h5", files)
    zone = zone_mask(root)
    maps = separate.read_patch_files(files, zone)
    assert sorted(maps) == [1, 2, 100000]
    assert maps[100000].max() + 1 == zone.sum()  # one patch per zone pixel
    attrs = io.read_product(files[2], "patch_map").attrs
    assert attrs["n_patches"] == zone.sum() and attrs["requested_patches"] == 100000
    assert f"K = 100000 exceeds the {zone.sum()} pixels of GAL020_U" in caplog.text
