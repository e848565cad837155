"""One sky, two methods: the reduction of posteriors to intervals, the CPU-time reader,
the summary table and its figure, the rows file, the config check of observed skies."""

import json

import numpy as np
import pytest

from bmodesep.config import validate_config
from bmodesep.core.compare import posterior_interval
from bmodesep.errors import ConfigError, DataError
from bmodesep.plots import compare as plots
from bmodesep.products import benchmarks
from bmodesep.products.io import write_csv_atomic
from bmodesep.stages import compare as stage

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_posterior_interval_is_the_mean_over_realisations():
    means = np.array([0.01, 0.02, 0.03])
    hdi = np.array([[0.0, 0.02], [0.01, 0.03], [0.02, 0.05]])
    assert posterior_interval(means, hdi) == pytest.approx((0.02, 0.01, 0.1 / 3))
    with pytest.raises(ValueError, match="do not match"):
        posterior_interval(means, hdi[:2])


def test_cpu_time_of_benchmark_files(tmp_path):
    a, b, na = tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "na.tsv"
    a.write_text(HEADER + "10.0\t0:00:10\t1\t1\t1\t1\t0\t0\t90\t3600.0\n")
    # two runs of the job (a retry): the latest counts
    b.write_text(HEADER + "1\t0:00:01\t1\t1\t1\t1\t0\t0\t90\t99.0\n")
    with b.open("a") as f:
        f.write("2\t0:00:02\t1\t1\t1\t1\t0\t0\t90\t1800\n")
    na.write_text(HEADER + "0.1\t0:00:00\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n")
    assert benchmarks.cpu_hours([a, b, na]) == pytest.approx(1.5)
    with pytest.raises(DataError, match=r"missing\.tsv"):
        benchmarks.cpu_seconds(tmp_path / "missing.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("s\tcpu\n1\t2\n")
    with pytest.raises(DataError, match=r"bad\.tsv: not a Snakemake benchmark file"):
        benchmarks.cpu_seconds(bad)


def _summary_file(tmp_path):
    rows = []
    for sky in ("grf", "layered"):
        for i, method in enumerate(("kmeans", "single", "sbi_joint", "ps_likelihood")):
            r = 0.01 + 0.002 * i
            rows.append(
                dict(zip(plots.SUMMARY_COLUMNS, (sky, "sosat", method, 0.01, r, r - 0.003,
                                                 r + 0.004, 0.0035, 0.1 * (i + 1)), strict=True))
            )  # fmt: skip
    return write_csv_atomic(tmp_path / "summary.csv", rows, plots.SUMMARY_COLUMNS)


def test_the_figure_has_a_panel_per_sky_and_a_row_per_method(tmp_path):
    fig = plots._figure_compare(_summary_file(tmp_path))
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["grf (sosat)", "layered (sosat)"]
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels == ["kmeans", "single", "sbi_joint", "ps_likelihood"]
    # every interval is inside the common x range
    lo, hi = axes[0].get_xlim()
    assert lo < 0.007 and hi > 0.02


def test_a_summary_with_a_non_number_is_refused(tmp_path):
    path = _summary_file(tmp_path)
    path.write_text(path.read_text().replace("0.0035", "oops", 1))
    with pytest.raises(DataError, match="line 2 has a field that is not a number"):
        plots.read_summary(path)


def test_the_rows_file_is_checked(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"simulation": "so", "method": "kmeans"}]))
    with pytest.raises(DataError, match=r"row 0 lacks \['sky', 'instrument', 'kind'"):
        stage.read_rows(path)
    row = dict.fromkeys(stage.ROW_KEYS, "x") | {"benchmarks": []}
    path.write_text(json.dumps([row]))
    with pytest.raises(DataError, match="kind 'x'"):
        stage.read_rows(path)
    path.write_text("[")
    with pytest.raises(DataError, match="not valid JSON"):
        stage.read_rows(path)


def test_an_observed_sky_must_be_seen_as_the_estimator_simulates(config_factory):
    cfg = config_factory()
    cfg["nilc"] = dict(cfg["nilc"], simulations=["so"], run=["joint"])
    cfg["npe"] = dict(cfg["npe"], nside=8, ell_min=8, chunks=1, observed=["so"])
    validate_config(cfg)  # so: sosat, nside 8, lmax 23, as the estimator
    cfg["simulations"]["so"]["lmax"] = 16
    with pytest.raises(ConfigError, match="'so' has lmax 16, the estimator's simulations 23"):
        validate_config(cfg)
    cfg["simulations"]["so"]["lmax"] = None
    cfg["simulations"]["so"]["instrument"] = "litebird"
    with pytest.raises(ConfigError, match="'so' uses instrument 'litebird'"):
        validate_config(cfg)
