import copy

import pytest
from conftest import REPO, tiny_config

from bmodesep.config import (
    load_config,
    simulation_analysis_iterations,
    simulation_config,
    validate_config,
)
from bmodesep.errors import ConfigError

SHIPPED = sorted((REPO / "config").glob("*.yaml"))


def raw():
    return {
        "skies": {"s": {"kind": "grf"}},
        "instruments": {"lb": "litebird"},
        "simulations": {"x": {"sky": "s", "instrument": "lb", "nside": 8}},
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = load_config(path)
    assert config["simulations"]


def test_defaults_are_filled():
    c = validate_config(raw())
    sky = c["skies"]["s"]
    assert sky["dust"]["freq_ref_ghz"] == 353.0 and sky["synchrotron"]["freq_ref_ghz"] == 23.0
    assert sky["dust"]["beta"] == {"mean": 1.54, "amplitude": 0.0, "gamma": -4.0, "ell_min": 2}
    assert c["cmb"]["cosmology"]["h0"] == pytest.approx(67.32)
    assert c["simulations"]["x"]["analysis_iterations"] is None  # automatic
    assert c["masks"]["sky_fractions"] == {"GAL020": 0.2, "GAL040": 0.4, "GAL060": 0.6}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(bogus=1), r"<top level>: unknown key 'bogus'"),
        (
            lambda c: c["skies"]["s"].update(dusst={}),
            r"skies\.s: unknown key 'dusst' \(did you mean 'dust'\?\)",
        ),
        (
            lambda c: c["simulations"]["x"].update(nside="eight"),
            r"simulations\.x\.nside: 'eight' is not of type 'integer'",
        ),
        (
            lambda c: c["simulations"]["x"].update(nside=12),
            r"simulations\.x\.nside: 12 is not a "
            "power of two",
        ),
        (lambda c: c["instruments"].update(lb="planck"), r"unknown instrument preset 'planck'"),
        (lambda c: c["skies"]["s"].update(kind="fancy"), r"skies\.s\.kind: 'fancy' is not one of"),
        (lambda c: c["simulations"]["x"].update(sky="nosuch"), r"unknown sky 'nosuch'"),
        (
            lambda c: c["instruments"].update(
                lb={"frequencies_ghz": [30, 40, 50], "depth_uk_arcmin": [1, 2]}
            ),
            r"instruments\.lb\.depth_uk_arcmin: 2 entries for 3 frequencies",
        ),
        (lambda c: c["skies"]["s"].update(kind="true_patch"), r"true_patch sky needs patch maps"),
        (
            lambda c: c["skies"]["s"].update(kind="pysm", pysm={"preset": "d1q7"}),
            r"unknown PySM model\(s\) q7",
        ),
        (lambda c: c["masks"].update(source="planck"), r"masks\.planck_file: required"),
        (lambda c: c.update(nilc={"run": ["jnt"]}), r"nilc\.run: unknown compression 'jnt'"),
        (lambda c: c.update(nilc={"simulations": ["y"]}), r"nilc\.simulations: unknown simulation"),
        (
            lambda c: c.update(nilc={"needlet_fwhm_arcmin": [60, 120]}),
            r"nilc\.needlet_fwhm_arcmin: \[60, 120\] must decrease strictly",
        ),
        (
            lambda c: c.update(
                nilc={
                    "compressions": {
                        "x": {"basis": "needlet", "components": ["cmb"], "keep": "dust"}
                    }
                }
            ),
            r"nilc\.compressions\.x\.keep: 'dust' is neither 'all' nor one of",
        ),
        (
            lambda c: c.update(
                nilc={
                    "compressions": {"x": {"basis": "pixel", "components": ["cmb"], "keep": "all"}}
                }
            ),
            r"nilc\.compressions\.x\.basis: 'pixel' is not one of",
        ),
        (
            lambda c: c.update(npe={"chunks": 1, "compressions": ["joint", "jnt"]}),
            r"npe\.compressions: unknown compression 'jnt'",
        ),
        (
            lambda c: c.update(
                npe={"chunks": 1, "test_sets": {"a": {"simulations": 2, "fixed": {"tau": 1.0}}}}
            ),
            r"npe\.test_sets\.a\.fixed: unknown parameters \['tau'\]",
        ),
        (
            lambda c: c.update(npe={"chunks": 1, "test_sets": {"train": {"simulations": 2}}}),
            r"npe\.test_sets: 'train' is reserved",
        ),
        (
            lambda c: c.update(npe={"chunks": 1, "observed": ["x"]}),
            r"npe\.observed: 'x' is not in nilc\.simulations",
        ),
        (
            lambda c: c.update(npe={"chunks": 1, "hyperparameters": {"epochs": 3}}),
            r"npe\.hyperparameters: unknown key 'epochs'",
        ),
    ],
)
def test_bad_configs_name_the_key(mutate, message):
    c = copy.deepcopy(raw())
    c.setdefault("masks", {})
    mutate(c)
    with pytest.raises(ConfigError, match=message):
        validate_config(c)


def test_simulation_config_is_a_valid_config_of_one_simulation():
    c = tiny_config()
    sub = simulation_config(c, "so")
    assert list(sub["simulations"]) == ["so"] and list(sub["instruments"]) == ["sosat"]
    again = validate_config(sub)
    assert {k: again[k] for k in sub} == sub
    assert "compsep" not in sub  # simulations do not depend on separation settings
    with_cs = simulation_config(c, "so", with_compsep=True)
    assert with_cs["compsep"]["simulations"] == ["so"]
    with pytest.raises(ConfigError, match="unknown simulation 'zz'"):
        simulation_config(c, "zz")


def test_analysis_iterations_only_where_they_converge():
    sim = {"nside": 64, "lmax": None, "analysis_iterations": None}
    assert simulation_analysis_iterations(sim) == 0  # lmax 191 > 2 nside
    assert simulation_analysis_iterations(sim | {"lmax": 128}) == 3
    assert simulation_analysis_iterations(sim | {"analysis_iterations": 5}) == 5


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*nope\.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")
