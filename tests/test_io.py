import json
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from bmodesep.errors import DataError
from bmodesep.products import io


def write_example(path, data=None):
    data = np.arange(12.0).reshape(3, 4) if data is None else data
    return io.write_product(
        path,
        "example",
        {"maps/qu": io.Dataset(data, "uK_CMB", "test")},
        io.provenance({"a": 1, "b": [1, 2]}, 42, "test"),
        {"nside": 4},
    )


def test_round_trip_keeps_data_units_and_provenance(tmp_path):
    path = write_example(tmp_path / "x.h5")
    p = io.read_product(path, "example", {"maps/qu": ((3, None), "uK_CMB")})
    assert np.array_equal(p["maps/qu"], np.arange(12.0).reshape(3, 4))
    assert p.units["maps/qu"] == "uK_CMB"
    assert p.config == {"a": 1, "b": [1, 2]}
    assert p.attrs["seed"] == 42 and p.attrs["nside"] == 4
    assert p.attrs["format_version"] == io.FORMAT_VERSION
    assert p.attrs["bmodesep_version"] and p.attrs["git_revision"]
    assert p.attrs["stage"] == "test" and "created_utc" in p.attrs
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_failed_write_leaves_no_file(tmp_path):
    class Exploding:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("disk on fire")

    target = tmp_path / "y.h5"
    with pytest.raises(RuntimeError, match="disk on fire"):
        io.write_product(
            target,
            "example",
            {"a": io.Dataset(np.ones(3), "1"), "b": io.Dataset(Exploding(), "1")},
            io.provenance({}, None, "test"),
        )
    assert os.listdir(tmp_path) == []


def test_nan_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(DataError, match="'maps/qu' contains NaN"):
        write_example(tmp_path / "z.h5", np.array([1.0, np.nan]))
    assert os.listdir(tmp_path) == []


def test_killed_writer_leaves_no_product(tmp_path):
    """SIGKILL in the middle of a write: the product path never appears."""
    target = tmp_path / "big.h5"
    script = textwrap.dedent(f"""
        import time, h5py
        import numpy as np
        from bmodesep.products import io
        real = h5py.File.create_dataset
        def slow(self, *a, **k):
            out = real(self, *a, **k)
            print("writing", flush=True)
            time.sleep(30)
            return out
        h5py.Group.create_dataset = slow
        io.write_product({str(target)!r}, "example", {{"a": io.Dataset(np.ones(10), "1")}},
                         io.provenance({{}}, None, "test"))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    leftovers = os.listdir(tmp_path)
    assert leftovers and all(name.startswith(".big.h5.tmp-") for name in leftovers)
    write_example(target)  # the next successful write cleans the stale temporary up
    assert os.listdir(tmp_path) == ["big.h5"]


def test_readers_name_the_problem_and_the_file(tmp_path):
    path = write_example(tmp_path / "x.h5")
    with pytest.raises(DataError, match=r"missing input file .*nope\.h5"):
        io.read_product(tmp_path / "nope.h5", "example")
    with pytest.raises(DataError, match=r"x\.h5 holds a 'example' product, expected 'sky'"):
        io.read_product(path, "sky")
    with pytest.raises(
        DataError,
        match=r"x\.h5: dataset 'maps/qu' has shape \(3, 4\), "
        r"expected \(2, any\)",
    ):
        io.read_product(path, "example", {"maps/qu": ((2, None), "uK_CMB")})
    with pytest.raises(DataError, match=r"'maps/qu' is in 'uK_CMB', expected 'K'"):
        io.read_product(path, "example", {"maps/qu": ((3, 4), "K")})
    with pytest.raises(DataError, match="dataset 'other' is missing"):
        io.read_product(path, "example", {"other": ((3,), "1")})
    with h5py.File(path, "a") as f:
        f["maps/qu"][0, 0] = np.nan
    with pytest.raises(DataError, match=r"x\.h5: dataset 'maps/qu' contains NaN"):
        io.read_product(path, "example", {"maps/qu": ((3, 4), "uK_CMB")})
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(DataError, match=r"junk\.h5 is not a readable HDF5 file"):
        io.read_product(tmp_path / "junk.h5", "example")


def test_provenance_config_is_json():
    attrs = io.provenance({"x": {"y": 1.5}}, 3, "stage")
    assert json.loads(attrs["config"]) == {"x": {"y": 1.5}}
