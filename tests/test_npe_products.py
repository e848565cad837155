"""NPE products: each writer's file reads back through its checked reader; bad files refused."""

import json

import numpy as np
import pytest

from bmodesep.core.npe.prior import PARAMETERS
from bmodesep.errors import DataError
from bmodesep.products import checkpoint, io
from bmodesep.products import npe as ns
from bmodesep.products import npe_results as nr

NP = len(PARAMETERS)


def _prov(stage="test"):
    return io.provenance({"npe": {"seed": 3}}, 3, stage)


def _summary(rng, n):
    out = {}
    for q in nr.SUMMARY_QUANTITIES:
        out[f"{q}_mean"] = rng.random(n)
        out[f"{q}_hdi"] = np.sort(rng.random((n, 2)), axis=1)
    return out


def _assert_summary(p, summary):
    for q in nr.SUMMARY_QUANTITIES:
        np.testing.assert_array_equal(p[nr.summary_mean(q)], summary[f"{q}_mean"])
        np.testing.assert_array_equal(p[nr.summary_hdi(q)], summary[f"{q}_hdi"])
        assert p.units[nr.summary_mean(q)] == p.units[nr.summary_hdi(q)] == "1"


def test_simulations_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    theta, seeds, cost = rng.random((5, NP)), np.arange(5, dtype=np.int64), rng.random(5)
    x = {"joint": rng.random((5, 15)), "hilc_joint": rng.random((5, 15))}
    path = ns.write_simulations(
        tmp_path / "chunk0.h5",
        theta,
        seeds,
        cost,
        x,
        _prov("npe_simulations"),
        set_name="fixed_r",
        chunk=1,
        fixed=["r", "B_d"],
        bin_edges=np.array([30, 45]),
        nside=16,
        lmax=47,
    )
    for c in x:
        got_theta, got_x, got_seeds = ns.read_chunks([path, path], c)
        np.testing.assert_array_equal(got_theta, np.concatenate([theta, theta]))
        np.testing.assert_array_equal(got_x, np.concatenate([x[c], x[c]]))
        np.testing.assert_array_equal(got_seeds, np.concatenate([seeds, seeds]))
    head = ns.read_simulations_head(path)
    assert head.data == {} and head.kind == ns.NPE_SIMULATIONS
    assert head.attrs["set"] == "fixed_r" and head.attrs["chunk"] == 1
    assert list(head.attrs["fixed"]) == ["r", "B_d"]
    assert list(head.attrs["compressions"]) == ["joint", "hilc_joint"]
    assert list(head.attrs["parameters"]) == list(PARAMETERS)
    assert list(head.attrs["bin_edges"]) == [30, 45]
    assert (head.attrs["nside"], head.attrs["lmax"]) == (16, 47)
    full = io.read_product(path, ns.NPE_SIMULATIONS)
    assert full.units == {
        ns.THETA: "1",
        ns.SEED: "1",
        ns.CPU_S: "s",
        ns.x_name("joint"): "uK_CMB^2",
        ns.x_name("hilc_joint"): "uK_CMB^2",
    }
    np.testing.assert_array_equal(full[ns.CPU_S], cost)
    assert full.config == {"npe": {"seed": 3}} and full.attrs["stage"] == "npe_simulations"


def test_checkpoint_piece_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = {"joint": rng.random((4, 15)), "hilc_joint": rng.random((4, 15))}
    cost = rng.random(4)
    parts = checkpoint.Parts(tmp_path / "chunk.h5", ns.SIMULATION_BLOCK, "job")
    parts.write(2, ns.block_datasets(x, cost), _prov())
    assert parts.done(range(3)) == [2]
    got_x, got_cost = ns.block_arrays(parts.read(2), ["joint", "hilc_joint"], 4)
    assert set(got_x) == set(x)
    for c in x:
        np.testing.assert_array_equal(got_x[c], x[c])
    np.testing.assert_array_equal(got_cost, cost)
    with pytest.raises(DataError, match=rf"{parts.path(2)}: dataset 'x/joint' has shape"):
        ns.block_arrays(parts.read(2), ["joint"], 10)
    with pytest.raises(DataError, match=rf"{parts.path(2)}: dataset 'x/constrained' is missing"):
        ns.block_arrays(parts.read(2), ["constrained"], 4)


def test_estimator_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    state = {"net.0.weight": rng.random((8, 3)), "net.0.bias": rng.random(8), "count": 3}
    hp = {"hidden_features": 16, "learning_rate": 5e-4}
    loss, val = rng.random(3), rng.random(3)
    path = nr.write_estimator(
        tmp_path / "estimator.h5",
        state,
        loss,
        val,
        _prov("npe_train"),
        compression="joint",
        prior="table1",
        n_data=15,
        hyperparameters=hp,
        hyperparameters_from="config",
        epochs=3,
        best_validation_loss=float(val.min()),
        training_simulations=80,
        train_wall_s=1.5,
        train_cpu_s=1.25,
    )
    p = nr.read_estimator(path)
    assert p.kind == nr.NPE_ESTIMATOR
    got = nr.estimator_state(p)
    assert set(got) == set(state)
    for k, v in state.items():
        np.testing.assert_array_equal(got[k], v)
        assert p.units[nr.state_name(k)] == "1"
    np.testing.assert_array_equal(p[nr.TRAINING_LOSS], loss)
    np.testing.assert_array_equal(p[nr.VALIDATION_LOSS], val)
    assert p.units[nr.TRAINING_LOSS] == p.units[nr.VALIDATION_LOSS] == "nats"
    assert json.loads(p.attrs["hyperparameters"]) == hp
    assert list(p.attrs["parameters"]) == list(PARAMETERS)
    expected = {
        "compression": "joint",
        "prior": "table1",
        "n_data": 15,
        "hyperparameters_from": "config",
        "epochs": 3,
        "best_validation_loss": float(val.min()),
        "training_simulations": 80,
        "train_wall_s": 1.5,
        "train_cpu_s": 1.25,
    }
    assert {k: p.attrs[k] for k in expected} == expected


def test_tuning_round_trip(tmp_path):
    values = np.array([[1e-4, 5.0, 2.0, 32.0], [3e-4, 7.0, 3.0, 48.0]])
    best = {"learning_rate": 3e-4, "num_transforms": 7}
    path = nr.write_tuning(
        tmp_path / "tune.h5",
        np.array([2.5, 1.5]),
        values,
        np.array([4, 6]),
        _prov("npe_tune"),
        searched=["learning_rate", "num_transforms", "num_layers", "hidden_features"],
        best_hyperparameters=best,
        compression="joint",
    )
    p = nr.read_tuning(path)
    np.testing.assert_array_equal(p[nr.VALIDATION_LOSS], [2.5, 1.5])
    np.testing.assert_array_equal(p[nr.TRIAL_VALUES], values)
    np.testing.assert_array_equal(p[nr.TRIAL_EPOCHS], [4, 6])
    assert p.units == {nr.VALIDATION_LOSS: "nats", nr.TRIAL_VALUES: "1", nr.TRIAL_EPOCHS: "1"}
    assert json.loads(p.attrs["best_hyperparameters"]) == best
    assert list(p.attrs["searched"]) == [
        "learning_rate",
        "num_transforms",
        "num_layers",
        "hidden_features",
    ]
    assert p.attrs["compression"] == "joint"


@pytest.mark.parametrize("fixed", [[], ["r", "B_d"]])
def test_posteriors_round_trip(tmp_path, fixed):
    rng = np.random.default_rng(3)
    samples, theta, x = rng.random((4, 20, NP)), rng.random((4, NP)), rng.random((4, 15))
    seeds, sigma, summary = np.arange(4), rng.random(4), _summary(rng, 4)
    path = nr.write_posteriors(
        tmp_path / "post.h5",
        samples,
        theta,
        x,
        seeds,
        sigma,
        summary,
        _prov("npe_posterior"),
        set_name="coverage",
        fixed=np.array(fixed, dtype=object) if fixed else np.array([]),
        compression="joint",
        estimator=tmp_path / "estimator.h5",
    )
    p = nr.read_posteriors(path)
    assert p[nr.SAMPLES].dtype == np.float32
    np.testing.assert_array_equal(p[nr.SAMPLES], samples.astype(np.float32))
    np.testing.assert_array_equal(p[nr.THETA], theta)
    np.testing.assert_array_equal(p[nr.X], x)
    np.testing.assert_array_equal(p[nr.SEED], seeds)
    np.testing.assert_array_equal(p[nr.TRUE_SIGMA_BETA], sigma)
    assert p.units[nr.X] == "uK_CMB^2" and p.units[nr.SAMPLES] == "1"
    _assert_summary(p, summary)
    assert p.attrs["set"] == "coverage" and list(p.attrs["fixed"]) == fixed
    assert p.attrs["estimator"] == str(tmp_path / "estimator.h5")
    assert p.attrs["compression"] == "joint" and list(p.attrs["parameters"]) == list(PARAMETERS)


def test_coverage_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    names = ["joint", *PARAMETERS]
    level = np.linspace(0, 1, 11)
    ecp, std, dev = rng.random((NP + 1, 11)), rng.random((NP + 1, 11)), rng.random(NP + 1)
    path = nr.write_coverage(
        tmp_path / "coverage.h5",
        level,
        ecp,
        std,
        dev,
        _prov("npe_coverage"),
        names=names,
        flagged=[np.bool_(i == 1) for i in range(NP + 1)],
        compression="joint",
        test_simulations=np.int64(12),
    )
    p = nr.read_coverage(path)
    for name, value in ((nr.CREDIBILITY, level), (nr.ECP, ecp), (nr.ECP_STD, std)):
        np.testing.assert_array_equal(p[name], value)
    np.testing.assert_array_equal(p[nr.DEVIATION_SIGMA], dev)
    assert set(p.units.values()) == {"1"}
    assert list(p.attrs["names"]) == names and p.attrs["test_simulations"] == 12
    assert list(p.attrs["flagged"]) == [i == 1 for i in range(NP + 1)]


def test_observed_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    samples, x, summary = rng.random((2, 20, NP)), rng.random((2, 15)), _summary(rng, 2)
    x_pred, chi2, x_cov = rng.random((7, 15)), rng.random(7), rng.random((20, 15))
    path = nr.write_observed(
        tmp_path / "observed.h5",
        samples,
        x,
        x_pred,
        chi2,
        x_cov,
        summary,
        _prov("npe_observed"),
        simulation="so_grf",
        compression="joint",
        chi2_observed=31.5,
        ppc_p_value=0.25,
        nilc=tmp_path / "nilc.h5",
    )
    p = nr.read_observed(path)
    assert p[nr.SAMPLES].dtype == np.float32
    np.testing.assert_array_equal(p[nr.SAMPLES], samples.astype(np.float32))
    for name, value in ((nr.X, x), (nr.X_PREDICTIVE, x_pred), (nr.X_COVARIANCE_SIMS, x_cov)):
        np.testing.assert_array_equal(p[name], value)
        assert p.units[name] == "uK_CMB^2"
    np.testing.assert_array_equal(p[nr.CHI2_PREDICTIVE], chi2)
    _assert_summary(p, summary)
    assert (p.attrs["chi2_observed"], p.attrs["ppc_p_value"]) == (31.5, 0.25)
    assert p.attrs["simulation"] == "so_grf" and p.attrs["nilc"] == str(tmp_path / "nilc.h5")


def test_readers_refuse_wrong_units_shapes_and_kinds(tmp_path):
    D, prov = io.Dataset, _prov()
    attrs = {
        "compression": "joint",
        "prior": "table1",
        "parameters": list(PARAMETERS),
        "n_data": 15,
        "hyperparameters": "{}",
        "epochs": 1,
    }
    state = {nr.state_name("w"): D(np.ones(3), "1")}
    bad_units = tmp_path / "estimator.h5"
    io.write_product(
        bad_units,
        nr.NPE_ESTIMATOR,
        state | {nr.TRAINING_LOSS: D(np.ones(1), "1"), nr.VALIDATION_LOSS: D(np.ones(1), "nats")},
        prov,
        attrs,
    )
    with pytest.raises(DataError, match=rf"{bad_units}: dataset 'training_loss' is in '1'"):
        nr.read_estimator(bad_units)
    no_state = tmp_path / "no_state.h5"
    losses = {nr.TRAINING_LOSS: D(np.ones(1), "nats"), nr.VALIDATION_LOSS: D(np.ones(1), "nats")}
    io.write_product(no_state, nr.NPE_ESTIMATOR, losses, prov, attrs)
    with pytest.raises(DataError, match=rf"{no_state}: no flow weights"):
        nr.read_estimator(no_state)
    bad_shape = tmp_path / "tune.h5"
    io.write_product(
        bad_shape,
        nr.NPE_TUNING,
        {
            nr.VALIDATION_LOSS: D(np.ones(2), "nats"),
            nr.TRIAL_VALUES: D(np.ones((2, 3)), "1"),
            nr.TRIAL_EPOCHS: D(np.ones(2), "1"),
        },
        prov,
        {"searched": ["a", "b"], "best_hyperparameters": "{}", "compression": "joint"},
    )
    with pytest.raises(DataError, match=rf"{bad_shape}: dataset 'values' has shape \(2, 3\)"):
        nr.read_tuning(bad_shape)
    with pytest.raises(DataError, match=rf"{bad_shape} holds a 'npe_tuning' product"):
        ns.read_simulations_head(bad_shape)
    with pytest.raises(DataError, match=rf"{bad_shape} holds a 'npe_tuning' product"):
        nr.read_estimator(bad_shape)
