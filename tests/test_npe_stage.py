"""SBI stages on a tiny campaign: train, reload, posteriors, coverage, tuning; bad input."""

import json

import numpy as np
import pytest
from conftest import tiny_config

from bmodesep import cli
from bmodesep.config import validate_config
from bmodesep.core.npe import flows, prior
from bmodesep.core.simulate.cmb import compute_camb_spectra
from bmodesep.errors import ConfigError, DataError
from bmodesep.products import io, sims
from bmodesep.products import npe_results as results
from bmodesep.products.npe import read_chunks
from bmodesep.products.npe_results import read_posteriors
from bmodesep.settings import cosmology
from bmodesep.stages import npe

# a shared stage run (its module fixture) dominates: the whole module is in the slow tier
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("npe")
    cfg = validate_config(
        dict(
            tiny_config(),
            npe={
                "nside": 16,
                "chunks": 2,
                "simulations_per_chunk": 40,
                "coverage_simulations": 12,
                "posterior_samples": 50,
                "hyperparameters": {"max_epochs": 3, "batch_size": 32, "hidden_features": 16},
                "tune": {"trials": 2, "max_epochs": 2},
            },
        )
    )
    sims.write_spectra(root / "camb.h5", compute_camb_spectra(cosmology(cfg["cmb"]), 100), cfg)
    chunks = []
    for name, n in (("train", 2), ("coverage", 1)):
        for i in range(n):
            chunks.append(root / f"{name}{i}.h5")
            npe.npe_chunk(cfg, name, i, root / "camb.h5", chunks[-1])
    npe.npe_train(cfg, "joint", chunks[:2], root / "estimator.h5")
    return root, cfg


def test_estimator_is_saved_with_its_config_and_reloads(stage):
    root, _ = stage
    est = io.read_product(root / "estimator.h5", "npe_estimator")
    assert est.attrs["compression"] == "joint" and est.attrs["training_simulations"] == 80
    assert json.loads(est.attrs["hyperparameters"])["hidden_features"] == 16
    assert est.config["training"]["hyperparameters"]["max_epochs"] == 3
    assert est["validation_loss"].size == est.attrs["epochs"] <= 3
    one, _ = npe.load_posterior(root / "estimator.h5")
    two, _ = npe.load_posterior(root / "estimator.h5")
    x = read_chunks([root / "coverage0.h5"], "joint")[1]
    np.testing.assert_array_equal(one.sample(x[:2], 20, seed=1), two.sample(x[:2], 20, seed=1))


def test_posteriors_and_coverage_products(stage):
    root, cfg = stage
    npe.npe_posterior(cfg, root / "estimator.h5", [root / "coverage0.h5"], root / "post.h5")
    post = read_posteriors(root / "post.h5")
    assert post["samples"].shape == (12, 50, 13) and post.attrs["set"] == "coverage"
    table1 = prior.prior("table1")
    assert np.all(post["samples"] >= table1.low) and np.all(post["samples"] <= table1.high)
    r = post["samples"][..., 0]
    assert np.allclose(post["summary/r_mean"], r.mean(axis=1), rtol=1e-5)
    lo, hi = post["summary/r_hdi"].T
    inside = np.mean((r >= lo[:, None] - 1e-7) & (r <= hi[:, None] + 1e-7), axis=1)
    assert np.all(inside >= 0.68) and np.all(inside <= 0.72)
    npe.npe_coverage(cfg, root / "post.h5", root / "coverage.h5")
    cov = io.read_product(root / "coverage.h5", "npe_coverage")
    assert cov["ecp"].shape == (14, 51) and list(cov.attrs["names"])[:2] == ["joint", "r"]
    assert np.all(np.diff(cov["ecp"], axis=1) >= 0)  # a CDF in the credibility level
    assert np.all(cov["ecp"][:, 0] == 0) and np.all(cov["ecp"] <= 1)


def test_estimator_settings_are_saved_and_rebuild_the_estimator(stage, tmp_path):
    root, cfg = stage
    chosen = {"parameters": "prior_bounded", "data_transform": "asinh", "embedding_features": 4}
    cfg = validate_config(cfg | {"npe": cfg["npe"] | {"estimator": chosen}})
    chunks = [root / "train0.h5", root / "train1.h5"]
    npe.npe_train(cfg, "joint", chunks, tmp_path / "estimator.h5")
    est = io.read_product(tmp_path / "estimator.h5", "npe_estimator")
    assert json.loads(est.attrs["hyperparameters"]).items() >= chosen.items()
    assert est.config["training"]["estimator"] == chosen
    post, _ = npe.load_posterior(tmp_path / "estimator.h5")
    assert post.parameters == "prior_bounded"
    x = read_chunks([root / "coverage0.h5"], "joint")[1]
    table1 = prior.prior("table1")
    samples = post.sample(x[:2], 30, seed=0)
    assert np.all(samples >= table1.low) and np.all(samples <= table1.high)


def test_yardstick_table_has_every_method_at_every_training_subset(stage):
    root, cfg = stage
    cfg = cfg | {"npe": cfg["npe"] | {"training_fractions": [0.5]}}  # and the whole set
    chunks = [root / "train0.h5", root / "train1.h5"]
    npe.npe_yardstick(cfg, "joint", chunks, [root / "coverage0.h5"], root / "yardstick.csv")
    rows = results.read_yardstick(root / "yardstick.csv")
    assert [(r["method"], r["training_simulations"]) for r in rows] == [
        (m, n) for m in ("ridge_linear", "ridge_asinh", "mlp_asinh") for n in ("40", "80")
    ]
    assert all(r["parameter"] == "r" and r["test_simulations"] == "12" for r in rows)
    assert all(-1 <= float(r["correlation"]) <= 1 and float(r["rms_error"]) > 0 for r in rows)


def test_tuning_searches_the_appendix_c_space_and_resumes(stage, monkeypatch, capsys):
    from bmodesep import log as logs

    logs.configure()  # as the command line does: log lines to stdout
    root, cfg = stage
    chunks = [root / "train0.h5", root / "train1.h5"]
    real, calls = flows.train, []

    def killed_in_second_trial(*args, **kwargs):
        calls.append(kwargs["label"])
        if len(calls) == 2:
            raise KeyboardInterrupt("job killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(flows, "train", killed_in_second_trial)
    with pytest.raises(KeyboardInterrupt):
        npe.npe_tune(cfg, "joint", chunks, root / "tune.h5")
    assert not (root / "tune.h5").exists() and (root / "tune.h5.parts").exists()
    calls.clear()
    npe.npe_tune(cfg, "joint", chunks, root / "tune.h5")
    assert calls == ["trial 2"]  # trial 0 kept, trial 1 (cut off) redone as trial 2
    log = capsys.readouterr().out
    logs.unconfigure()
    assert "tuning joint: resuming: 1/2 trials done by an earlier run" in log
    assert "tuning joint: 2/2 trials" in log and "ETA 0:00:00" in log
    assert "trial 2: epoch 2/2, loss" in log  # training progress lines
    assert not (root / "tune.h5.parts").exists()
    monkeypatch.undo()
    t = io.read_product(root / "tune.h5", "npe_tuning")
    assert t["validation_loss"].shape == (2,) and t.attrs["searched"][0] == "learning_rate"
    best = json.loads(t.attrs["best_hyperparameters"])
    assert 1e-6 <= best["learning_rate"] <= 1e-2 and 3 <= best["num_transforms"] <= 13
    npe.npe_train(cfg, "joint", [root / "train0.h5"], root / "tuned.h5", tuning=root / "tune.h5")
    tuned = io.read_product(root / "tuned.h5", "npe_estimator")
    assert json.loads(tuned.attrs["hyperparameters"])["num_layers"] == best["num_layers"]


def test_a_tuning_sized_for_few_cores_trains_on_the_first_simulations(stage, tmp_path, monkeypatch):
    root, cfg = stage
    chunks = [root / "train0.h5", root / "train1.h5"]
    tune = {"trials": 1, "max_epochs": 2, "simulations": 100}
    with pytest.raises(ConfigError, match=r"npe.tune.simulations: 100 is more than the 80"):
        validate_config(cfg | {"npe": cfg["npe"] | {"tune": tune}})
    real, seen = flows.train, []

    def recording(theta, x, *args, **kwargs):
        seen.append((theta, x))
        return real(theta, x, *args, **kwargs)

    monkeypatch.setattr(flows, "train", recording)
    tune["simulations"] = 50
    sized = validate_config(cfg | {"npe": cfg["npe"] | {"tune": tune}})
    npe.npe_tune(sized, "joint", chunks, tmp_path / "tune.h5")
    theta, x, _ = read_chunks(chunks, "joint")
    assert len(seen) == 1 and np.array_equal(seen[0][0], theta[:50])
    assert np.array_equal(seen[0][1], x[:50])


def test_compare_estimators_script_writes_a_row_per_variant_and_size(stage, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    root, _ = stage
    path = Path(__file__).parents[1] / "scripts" / "compare_estimators.py"
    spec = importlib.util.spec_from_file_location("compare_estimators", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--train", str(root / "train0.h5"), str(root / "train1.h5")]
    args += ["--test", str(root / "coverage0.h5"), "--compression", "joint", "--sizes", "60"]
    args += ["--base", '{"max_epochs": 2, "batch_size": 32, "hidden_features": 8}']
    args += [
        "--variant",
        "default",
        "{}",
        "--variant",
        "bounded",
        '{"parameters": "prior_bounded"}',
    ]
    assert script.main([*args, "--samples", "40", "--output", str(tmp_path / "e.csv")]) == 0
    rows = io.read_csv(tmp_path / "e.csv", script.COLUMNS)
    assert [(r["variant"], r["training_simulations"]) for r in rows] == [
        ("default", "60"),
        ("bounded", "60"),
    ]
    assert json.loads(rows[1]["settings"])["parameters"] == "prior_bounded"
    assert all(-1 <= float(r["correlation_r"]) <= 1 for r in rows)
    assert script.main([*args, "--sizes", "500", "--output", str(tmp_path / "f.csv")]) == 1
    assert "only 80 training pairs" in capsys.readouterr().err
    assert not (tmp_path / "f.csv").exists()


def test_mismatched_inputs_are_refused_and_nothing_is_written(stage, tmp_path):
    root, cfg = stage
    other = validate_config(dict(cfg, npe=dict(cfg["npe"], ell_min=20, bin_width=10)))
    npe.npe_chunk(other, "coverage", 0, root / "camb.h5", tmp_path / "c.h5")
    with pytest.raises(DataError, match="data vectors of length 30"):
        npe.npe_posterior(cfg, root / "estimator.h5", [tmp_path / "c.h5"], tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()
    with pytest.raises(DataError, match="missing input file"):
        npe.npe_train(cfg, "joint", [tmp_path / "none.h5"], tmp_path / "e.h5")
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    args = ["npe", "npe_coverage", "--config", str(empty), "--posteriors", "x", "--output", "y"]
    assert cli.main(args) == 2 and not (tmp_path / "y").exists()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["npe", "fly"])
    assert exit_.value.code == 2
