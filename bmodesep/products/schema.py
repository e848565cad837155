"""One definition per product: its datasets (key, axes, units, description, required or
optional) and attributes, that the writer and the reader both check against and that
``docs/products.md`` is generated from (``scripts/generate_docs.py``).

A product module declares a :class:`Spec` and writes with :meth:`Spec.write` (arrays by
key: a key the spec does not have, a missing required one or an array of the wrong number
of axes is a programming error, raised before anything is written) and reads with
:meth:`Spec.read` (kind, format, presence, axes, units and finiteness checked by
:func:`bmodesep.products.io.read_product`; a fixed length of an axis is given by name).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bmodesep.products import io


@dataclass(frozen=True)
class Field:
    """A dataset of a product."""

    key: str
    axes: tuple[str, ...]  # named axes, () for a scalar
    units: str  # "uK_CMB", "K", "deg", "1" (dimensionless)...
    description: str  # written into the dataset's ``description`` attribute
    optional: bool = False  # written only in some cases (``when`` says which)
    when: str = ""


@dataclass(frozen=True)
class Attribute:
    """A file attribute of a product (besides the provenance every product has)."""

    name: str
    description: str
    optional: bool = False


@dataclass(frozen=True)
class Spec:
    """A product: its ``kind`` attribute, the file(s) it is, its datasets and attributes."""

    kind: str
    files: str  # where the workflow writes it, e.g. ``nilc/{sim}/{compression}.h5``
    writer: str  # the rule that writes it
    description: str
    fields: tuple[Field, ...]
    attributes: tuple[Attribute, ...] = ()

    def field(self, key: str) -> Field:
        for f in self.fields:
            if f.key == key:
                return f
        raise KeyError(f"product '{self.kind}' has no dataset '{key}'")

    def write(
        self,
        path: str | os.PathLike,
        arrays: Mapping[str, Any],
        provenance: Mapping[str, Any],
        attrs: Mapping[str, Any],
    ) -> Path:
        """Write ``arrays`` (by key) with the spec's units and descriptions, atomically."""
        unknown = sorted(set(arrays) - {f.key for f in self.fields})
        if unknown:
            raise ValueError(f"product '{self.kind}' has no dataset(s) {unknown}")
        missing = [f.key for f in self.fields if not f.optional and f.key not in arrays]
        if missing:
            raise ValueError(f"product '{self.kind}': required dataset(s) {missing} not given")
        names = {a.name for a in self.attributes}
        unknown = sorted(set(attrs) - names)
        if unknown:
            raise ValueError(f"product '{self.kind}' has no attribute(s) {unknown}")
        missing = [a.name for a in self.attributes if not a.optional and a.name not in attrs]
        if missing:
            raise ValueError(f"product '{self.kind}': required attribute(s) {missing} not given")
        datasets = {}
        for f in self.fields:  # the spec's order
            if f.key not in arrays:
                continue
            arr = np.asarray(arrays[f.key])
            if arr.ndim != len(f.axes):
                raise ValueError(
                    f"product '{self.kind}': dataset '{f.key}' has {arr.ndim} axes, "
                    f"the spec {len(f.axes)} {list(f.axes)}"
                )
            datasets[f.key] = io.Dataset(arr, f.units, f.description)
        return io.write_product(path, self.kind, datasets, provenance, attrs)

    def read(self, path: str | os.PathLike, **sizes: int) -> io.Product:
        """The product at ``path``, checked against the spec; ``sizes`` fixes the length
        of named axes (``pix=12 * nside**2``), others may have any length."""
        expect = {f.key: (tuple(sizes.get(axis) for axis in f.axes), f.units) for f in self.fields}
        optional = [f.key for f in self.fields if f.optional]
        return io.read_product(path, self.kind, expect, optional=optional)


SPECS: list[Spec] = []  # every product's spec, in the order the docs list them


def register(spec: Spec) -> Spec:
    """Add ``spec`` to :data:`SPECS` (the generated ``docs/products.md``)."""
    if any(s.kind == spec.kind for s in SPECS):
        raise ValueError(f"product kind '{spec.kind}' is defined twice")
    SPECS.append(spec)
    return spec


def markdown(spec: Spec) -> str:
    """The spec as a section of ``docs/products.md``."""
    lines = [
        f"## `{spec.kind}`",
        "",
        f"{spec.description}",
        "",
        f"Files: `{spec.files}`, written by rule `{spec.writer}`.",
        "",
        "| dataset | axes | units | required | description |",
        "|---|---|---|---|---|",
    ]
    for f in spec.fields:
        axes = "[" + ", ".join(f.axes) + "]" if f.axes else "scalar"
        need = f"optional: {_cell(f.when)}" if f.optional else "yes"
        lines.append(f"| `{f.key}` | {axes} | {f.units} | {need} | {_cell(f.description)} |")
    if spec.attributes:
        lines += ["", "| attribute | required | description |", "|---|---|---|"]
        for a in spec.attributes:
            need = "no" if a.optional else "yes"
            lines.append(f"| `{a.name}` | {need} | {_cell(a.description)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
