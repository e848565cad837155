import json
import logging
import os
import shutil
import signal
import socket
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
        import os, time
        import numpy as np
        from bmodesep.products import io
        def slow(fd, data):
            os.write(fd, bytes(data[: len(data) // 2]))
            print("writing", flush=True)
            time.sleep(30)
        io._write_all = slow
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
    write_example(target)  # the next write cleans the temporary of the dead writer up
    assert os.listdir(tmp_path) == ["big.h5"]


def test_a_live_writers_temporary_is_kept(tmp_path):
    """Only temporaries of writers that are gone are removed; a live one's stays."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = socket.gethostname()
        theirs = tmp_path / f".x.h5.tmp-{host}-{live.pid}-abcdef12"
        theirs.write_bytes(b"half a product")
        dead = tmp_path / f".x.h5.tmp-{host}-{2**22 + 12345}-abcdef12"  # above pid_max
        dead.write_bytes(b"half a product")
        other_host_old = tmp_path / ".x.h5.tmp-elsewhere-1-abcdef12"
        other_host_old.write_bytes(b"old")
        os.utime(other_host_old, (0, 0))
        other_host_new = tmp_path / ".x.h5.tmp-elsewhere-2-abcdef12"
        other_host_new.write_bytes(b"new")
        write_example(tmp_path / "x.h5")
        left = sorted(os.listdir(tmp_path))
        assert left == sorted(["x.h5", theirs.name, other_host_new.name])
    finally:
        live.kill()
        live.wait()


def test_two_writers_of_one_path_both_finish_and_the_last_rename_wins(tmp_path):
    target = tmp_path / "x.h5"
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from bmodesep.products import io
        value = float(sys.argv[1])
        for _ in range(40):
            io.write_product({str(target)!r}, "example",
                             {{"a": io.Dataset(np.full(200_000, value), "1")}},
                             io.provenance({{}}, None, "test"))
        print("done", flush=True)
    """)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(v)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for v in (1.0, 2.0)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
        assert out.decode().strip() == "done"
    a = io.read_product(target, "example")["a"]
    assert a.shape == (200_000,) and np.unique(a).size == 1 and a[0] in (1.0, 2.0)
    assert os.listdir(tmp_path) == ["x.h5"]


def test_a_product_too_big_for_the_free_space_is_refused_before_hdf5_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "IN_MEMORY_LIMIT", 0)  # the large-product path
    monkeypatch.setattr(io.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10, 10, 1))
    with pytest.raises(DataError, match=r"cannot write .*x\.h5: No space left on device"):
        write_example(tmp_path / "x.h5")
    assert os.listdir(tmp_path) == []


def test_the_folder_is_synced_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def record(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(io.os, "fsync", record)
    write_example(tmp_path / "x.h5")
    assert synced[-1] == os.path.realpath(tmp_path)


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


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "written-by-hdf5"])
def test_every_array_dataset_carries_a_checksum_and_keeps_its_values(
    tmp_path, monkeypatch, in_memory
):
    if not in_memory:
        monkeypatch.setattr(io, "IN_MEMORY_LIMIT", 0)  # the large-product path
    arrays = {
        "maps": np.random.default_rng(1).standard_normal((3, 2, 1000)),
        "labels": np.arange(7, dtype=np.int32),
        "flags": np.array([True, False]),
        "names": np.array([b"ab", b"cde"]),
        "scalar": np.float64(2.5),
        "empty": np.zeros((0, 3)),
    }
    path = io.write_product(
        tmp_path / "x.h5",
        "example",
        {k: io.Dataset(v, "1") for k, v in arrays.items()},
        io.provenance({}, None, "test"),
    )
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == io.FORMAT_VERSION == 2
        for name, want in arrays.items():
            d = f[name]
            assert d.dtype == want.dtype and d.shape == want.shape
            assert d[()].tobytes() == np.asarray(want).tobytes()
            assert d.fletcher32 == (want.ndim >= 1 and want.size >= 1), name
    p = io.read_product(path, "example")
    assert all(np.array_equal(p[k], v) for k, v in arrays.items())


def test_chunks_hold_whole_trailing_axes_up_to_a_mebibyte():
    assert io._chunk_shape((15, 2, 196608), 8) == (1, 1, 98304)
    assert io._chunk_shape((50000, 165), 8) == (794, 165)
    assert io._chunk_shape((3, 4), 8) == (3, 4)
    assert io._chunk_shape((7,), 2**21) == (1,)


def _flip_bytes_in_chunk(path, name):
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        some = fh.read(8)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(b ^ 0x5A for b in some))


def test_a_corrupted_chunk_is_one_error_naming_file_dataset_and_checksum(tmp_path):
    path = write_example(tmp_path / "x.h5", np.linspace(0.0, 1.0, 3 * 400).reshape(3, 400))
    _flip_bytes_in_chunk(path, "maps/qu")
    with h5py.File(path, "r") as f:  # HDF5 alone would say only that a filter failed
        with pytest.raises(OSError):
            f["maps/qu"][()]
    with pytest.raises(DataError, match=r"x\.h5: dataset 'maps/qu' is corrupted: its checksum"):
        io.read_product(path, "example", {"maps/qu": ((3, None), "uK_CMB")})
    with pytest.raises(DataError, match=r"x\.h5: dataset 'maps/qu' .*checksum"):
        io.read_product(path, "example")


def _write_by_hand(path, version, fletcher32):
    with h5py.File(path, "w") as f:
        f.attrs.update(io.provenance({"a": 1}, 0, "test"))
        f.attrs["kind"] = "example"
        f.attrs["format_version"] = version
        d = f.create_dataset("maps/qu", data=np.arange(12.0).reshape(3, 4), fletcher32=fletcher32)
        d.attrs["units"] = "uK_CMB"
    return path


def test_a_format_1_product_is_read_with_one_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("bmodesep"), "propagate", True)  # to caplog
    path = _write_by_hand(tmp_path / "old.h5", 1, fletcher32=False)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            p = io.read_product(path, "example", {"maps/qu": ((3, 4), "uK_CMB")})
            assert np.array_equal(p["maps/qu"], np.arange(12.0).reshape(3, 4))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "old.h5" in warnings[0] and "without checksums" in warnings[0]


def test_a_format_2_dataset_without_checksum_and_other_versions_are_refused(tmp_path):
    path = _write_by_hand(tmp_path / "bare.h5", 2, fletcher32=False)
    with pytest.raises(DataError, match=r"bare\.h5: dataset 'maps/qu' was written without checks"):
        io.read_product(path, "example")
    assert io.read_product(_write_by_hand(tmp_path / "ok.h5", 2, fletcher32=True), "example")
    for version in (0, 3):
        path = _write_by_hand(tmp_path / f"v{version}.h5", version, fletcher32=True)
        with pytest.raises(DataError, match=rf"v{version}\.h5 has format version {version}"):
            io.read_product(path, "example")
