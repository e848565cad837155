"""One definition per product (issue 30): the writer and the reader check against it."""

import h5py
import numpy as np
import pytest

from bmodesep.errors import DataError
from bmodesep.products import io
from bmodesep.products import nilc as nilc_product
from bmodesep.products.schema import Attribute, Field, Spec, markdown

SPEC = Spec(
    kind="toy",
    files="toy/{sim}.h5",
    writer="toy_rule",
    description="A toy product.",
    fields=(
        Field("maps", ("realisation", "pix"), "uK_CMB", "maps [realisation, pix]"),
        Field("weights", ("scale",), "1", "weights | per scale", True, "a needlet basis"),
    ),
    attributes=(Attribute("nside", "resolution"), Attribute("truth", "r drawn", True)),
)
PROVENANCE = {"config": "{}", "seed": 0}


def test_a_product_written_by_its_spec_reads_back_with_units_and_descriptions(tmp_path):
    maps = np.arange(6.0).reshape(2, 3)
    SPEC.write(tmp_path / "a.h5", {"maps": maps}, PROVENANCE, {"nside": 1})
    p = SPEC.read(tmp_path / "a.h5", pix=3)
    np.testing.assert_array_equal(p["maps"], maps)
    assert p.units == {"maps": "uK_CMB"} and p.attrs["nside"] == 1 and "weights" not in p.data
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["maps"].attrs["description"] == "maps [realisation, pix]"
    with pytest.raises(DataError, match=r"dataset 'maps' has shape \(2, 3\), expected \(any, 4\)"):
        SPEC.read(tmp_path / "a.h5", pix=4)


@pytest.mark.parametrize(
    "arrays, attrs, message",
    [
        (
            {"maps": np.zeros((2, 3)), "extra": np.zeros(2)},
            {"nside": 1},
            r"no dataset\(s\) \['extra'\]",
        ),
        ({"weights": np.zeros(2)}, {"nside": 1}, r"required dataset\(s\) \['maps'\] not given"),
        ({"maps": np.zeros(3)}, {"nside": 1}, "dataset 'maps' has 1 axes, the spec 2"),
        ({"maps": np.zeros((2, 3))}, {"nside": 1, "colour": 2}, r"no attribute\(s\) \['colour'\]"),
        ({"maps": np.zeros((2, 3))}, {"truth": 0.0}, r"required attribute\(s\) \['nside'\]"),
    ],
)
def test_the_writer_refuses_what_the_spec_does_not_define(arrays, attrs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        SPEC.write(tmp_path / "a.h5", arrays, PROVENANCE, attrs)
    assert not (tmp_path / "a.h5").exists()


def test_the_reader_checks_units_and_required_datasets_against_the_spec(tmp_path):
    io.write_product(
        tmp_path / "k.h5", "toy", {"maps": io.Dataset(np.zeros((1, 2)), "K")}, PROVENANCE
    )
    with pytest.raises(DataError, match="dataset 'maps' is in 'K', expected 'uK_CMB'"):
        SPEC.read(tmp_path / "k.h5")
    io.write_product(
        tmp_path / "w.h5", "toy", {"weights": io.Dataset(np.zeros(2), "1")}, PROVENANCE
    )
    with pytest.raises(DataError, match="dataset 'maps' is missing"):
        SPEC.read(tmp_path / "w.h5")


def test_the_docs_section_lists_every_dataset_and_attribute():
    text = markdown(SPEC)
    assert "| `maps` | [realisation, pix] | uK_CMB | yes | maps [realisation, pix] |" in text
    assert "| `weights` | [scale] | 1 | optional: a needlet basis | weights \\| per scale |" in text
    assert "| `truth` | no | r drawn |" in text and "rule `toy_rule`" in text


def test_the_nilc_product_is_defined_once():
    """Its module's keys are the spec's fields; its writer and reader go through it."""
    spec = nilc_product.SPEC
    keys = [f.key for f in spec.fields]
    assert keys == [
        nilc_product.MAPS,
        nilc_product.ALM_REAL,
        nilc_product.ALM_IMAG,
        nilc_product.MIXING,
        nilc_product.BEAMS,
        *nilc_product.NEEDLET_ONLY,
    ]
    assert [f.key for f in spec.fields if f.optional] == list(nilc_product.NEEDLET_ONLY)
