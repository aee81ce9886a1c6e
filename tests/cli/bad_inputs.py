"""The bad-input matrix: what a user can get wrong, through the command line
and the Python API, and how each outcome is classed.

Each case builds its inputs in a temporary folder, runs, and is classed:

* **clear**: the expected outcome, said well. An expected error exits
  non-zero with exactly one error line, which names the problem; an
  expected warning exits 0 with a warning line naming it; a valid input
  runs. In every case the output folder holds only complete results (a map
  with its mask, each a readable NIfTI; no temporary file) or nothing, and
  files that were there before are unchanged; a failed ``fit`` or
  ``evaluate`` leaves no new file (no model, no report).
* **misleading**: an error or warning that does not name the problem, spans
  several lines, or leaves partial outputs; or a valid input refused.
* **traceback**: a Python traceback reached the user.
* **silent**: an expected error or warning that never came.

``tests/cli/test_bad_inputs.py`` runs every case in-process and asserts
"clear". Run as a script, this module runs the command-line cases in
subprocesses against any anomseg on ``--pythonpath`` (an older checkout,
say) and prints the count of each class::

    python tests/cli/bad_inputs.py                       # this checkout
    python tests/cli/bad_inputs.py --pythonpath ../old   # another one
    PYTHONPATH=../old python tests/cli/bad_inputs.py --interface api
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import re
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

#: The grid of the fixture scans: 1.2 x 1 x 2 mm, not canonical.
AFFINE = np.array([[-1.2, 0, 0, 90.0], [0, -1.0, 0, 120.0], [0, 0, 2.0, -60.0], [0, 0, 0, 1]])
SHAPE = (24, 24, 6)


# -- fixtures --------------------------------------------------------------------
def volume(seed, shape=SHAPE):
    """A synthetic skull-stripped scan: a noisy ellipse, 0 outside."""
    from anomseg.datasets import make_healthy_images

    slices = make_healthy_images(n_images=shape[2], shape=shape[:2], random_state=seed)
    return np.moveaxis(slices, 0, -1).astype(np.float32)


def write(path, data, affine=AFFINE, dtype=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data) if dtype is None else np.asarray(data).astype(dtype)
    nib.save(nib.Nifti1Image(data, affine), path)
    return str(path)


class Fixtures:
    """The shared inputs of every case: healthy scans, a scan with a lesion,
    its truth mask and a model fitted by the command line under test."""

    def __init__(self, root, cli):
        self.root = Path(root)
        self.healthy = [write(self.root / f"healthy{i}.nii.gz", volume(i)) for i in range(3)]
        scan = volume(10)
        truth = np.zeros(SHAPE, np.uint8)
        truth[10:14, 10:14, 2:4] = 1
        scan[truth > 0] *= 1.8
        self.scan = write(self.root / "scan.nii.gz", scan)
        self.scan2 = write(self.root / "scan2.nii.gz", volume(11))
        self.truth = write(self.root / "truth.nii.gz", truth)
        self.model = str(self.root / "model.anomseg")
        fit = ["fit", "--method", "flair-threshold", *self.healthy, "-o", self.model]
        result = cli(fit, self.root)
        if result.status != 0:
            raise RuntimeError(f"the fixture model could not be fitted: {result.stderr}")
        # The file that crafted model files are made from, written by the
        # anomseg of this process (the command line under test may be
        # another one).
        self.safe_model = str(self.root / "safe.anomseg")
        from anomseg.baselines import FlairThreshold

        healthy = [np.asarray(nib.load(path).dataobj) for path in self.healthy]
        FlairThreshold().fit(healthy).save(self.safe_model)


# -- cases ---------------------------------------------------------------------------
@dataclass
class Case:
    """One bad (or valid, for contrast) input.

    ``build(tmp, fixtures)`` writes the inputs and returns the command
    line's arguments (or, for API cases, a callable); ``expect`` is
    "error", "warning" or "ok"; ``words`` is a regular expression that the
    message must match to name the problem.
    """

    name: str
    build: object
    expect: str
    words: str = ""
    interface: str = "cli"
    marker: bool = False  # a crafted file that would create tmp/ran if it ran code
    pre_existing: list = field(default_factory=list)


CASES = []


def case(name, expect, words="", interface="cli", marker=False):
    def register(build):
        CASES.append(Case(name, build, expect, words, interface, marker))
        return build

    return register


def _out(tmp):
    return str(tmp / "out")


def _predict(fx, scan, tmp, *extra):
    return ["predict", fx.model, scan, "-o", _out(tmp), *extra]


def _scan_case(name, expect, words, make):
    """A predict case on one scan that ``make(path)`` writes."""

    @case(f"predict: {name}", expect, words)
    def build(tmp, fx):
        path = tmp / "bad.nii.gz"
        make(path)
        return _predict(fx, str(path), tmp)


_scan_case("missing scan", "error", r"No NIfTI file.*bad\.nii\.gz", lambda p: None)
_scan_case("directory as scan", "error", r"bad\.nii\.gz", lambda p: p.mkdir())


def _truncated(path):
    write(path, volume(3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt(path):
    write(path, volume(3))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


_scan_case("truncated .nii.gz", "error", r"bad\.nii\.gz.*(read|EOF|truncat)", _truncated)
_scan_case("corrupt .nii.gz", "error", r"bad\.nii\.gz.*(read|corrupt|CRC|Error)", _corrupt)
_scan_case(
    "text renamed .nii.gz",
    "error",
    r"bad\.nii\.gz.*(NIfTI|read)",
    lambda p: p.write_text("patient notes"),
)
_scan_case("2D NIfTI", "error", r"bad\.nii\.gz.*3D", lambda p: write(p, volume(3)[..., 0]))
_scan_case(
    "4D NIfTI",
    "error",
    r"bad\.nii\.gz.*3D",
    lambda p: write(p, np.stack([volume(3)] * 2, axis=-1)),
)


def _with(value, where=(12, 12, 3)):
    def make(path):
        data = volume(3)
        data[where] = value
        write(path, data)

    return make


_scan_case("NaN voxels", "error", r"bad\.nii\.gz.*NaN", _with(np.nan))
_scan_case("Inf voxels", "error", r"bad\.nii\.gz.*infinite", _with(np.inf))
for _name, _data in (
    ("all-zero scan", np.zeros(SHAPE)),
    ("constant scan", np.full(SHAPE, 5.0)),
    ("1x1x1 scan", np.ones((1, 1, 1))),
):
    _scan_case(_name, "error", r"bad\.nii\.gz.*constant", lambda p, d=_data: write(p, d))
_scan_case(
    "1e30 intensities (valid: equalised, the maps are finite and meaningful)",
    "ok",
    "",
    lambda p: write(p, volume(3) * 1e30),
)
_scan_case(
    "intensities x1000 (valid: FLAIR equalisation is blind to the scale)",
    "ok",
    "",
    lambda p: write(p, volume(3) * 1000),
)
_scan_case(
    "not skull-stripped",
    "warning",
    r"bad\.nii\.gz.*foreground fraction",
    lambda p: write(p, volume(3) + 0.3),
)
_scan_case(
    "another voxel size",
    "warning",
    r"bad\.nii\.gz.*voxels of",
    lambda p: write(p, volume(3), affine=np.diag([3.0, 3.0, 6.0, 1.0])),
)
_scan_case(
    "another shape",
    "warning",
    r"bad\.nii\.gz.*shape",
    lambda p: write(p, volume(3, shape=(96, 96, 6))),
)
_scan_case(
    "complex dtype",
    "error",
    r"bad\.nii\.gz.*complex",
    lambda p: write(p, volume(3), dtype=np.complex64),
)
_scan_case("int16 dtype (valid)", "ok", "", lambda p: write(p, volume(3) * 1000, dtype=np.int16))
_scan_case("uint8 dtype (valid)", "ok", "", lambda p: write(p, volume(3) * 200, dtype=np.uint8))
_scan_case("float64 dtype (valid)", "ok", "", lambda p: write(p, volume(3), dtype=np.float64))


# -- issue 24: inputs that look wrong, headers and names --------------------------
def _raw(path, edit, data=None):
    """A .nii.gz whose header ``edit(header)`` changed after nibabel set it
    up, written by hand (nibabel would rewrite the affine on save)."""
    import gzip

    data = volume(3) if data is None else data
    header = nib.Nifti1Image(data, AFFINE).header.copy()
    header.set_data_offset(352)
    edit(header)
    body = np.asarray(data, np.float32).tobytes(order="F")
    Path(path).write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + body))


def _nan_sform(header):
    sform = AFFINE.copy()
    sform[0, 0] = np.nan
    header.set_sform(sform, 1)


def _empty_axis(header):
    header["dim"][3] = 0


def _declared(path, shape):
    """An uncompressed header that declares ``shape`` voxels, with none."""
    header = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), AFFINE).header
    header.set_data_shape(shape)
    Path(path).write_bytes(header.binaryblock + b"\0" * 4)


def _beyond_float32(path):
    data = volume(3).astype(np.float64)
    data[10:14, 10:14, 2:4] = 1e39
    write(path, data)


def _lesion_mask(path):
    truth = np.zeros(SHAPE, np.uint8)
    truth[10:14, 10:14, 2:4] = 1
    write(path, truth)


_scan_case(
    "a 0/1 lesion mask passed as a scan (warns)",
    "warning",
    r"bad\.nii\.gz.*only the values 0 and 1.*mask",
    _lesion_mask,
)
_scan_case(
    "a NaN in the sform",
    "error",
    r"bad\.nii\.gz.*corrupt NIfTI header.*NaN",
    lambda p: _raw(p, _nan_sform),
)
_scan_case(
    "a zero sform",
    "error",
    r"bad\.nii\.gz.*corrupt NIfTI header.*singular",
    lambda p: _raw(p, lambda h: h.set_sform(np.zeros((4, 4)), 1)),
)
_scan_case(
    "dim[3]=0",
    "error",
    r"bad\.nii\.gz.*corrupt NIfTI header.*24 x 24 x 0",
    lambda p: _raw(p, _empty_axis),
)
_scan_case(
    "float64 values of 1e39",
    "error",
    r"bad\.nii\.gz.*beyond the float32 range",
    _beyond_float32,
)
_scan_case(
    "an unknown datatype code (999)",
    "error",
    r"bad\.nii\.gz.*corrupt NIfTI header.*data code 999",
    lambda p: _raw(p, lambda h: h.__setitem__("datatype", 999)),
)
_scan_case(
    "a NaN voxel size (nan mL in the summary)",
    "error",
    r"bad\.nii\.gz.*corrupt NIfTI header.*voxel sizes.*nan",
    lambda p: _raw(p, lambda h: h["pixdim"].__setitem__(1, np.nan)),
)
_scan_case(
    "zero voxel sizes, which nibabel repairs (printed raw, unnamed)",
    "warning",
    r"bad\.nii\.gz.*nibabel repaired.*pixdim",
    lambda p: _raw(p, lambda h: h["pixdim"].__setitem__(slice(1, 4), 0)),
)
_scan_case("a FIFO as scan", "error", r"bad\.nii\.gz.*not a regular file", os.mkfifo)
_scan_case(
    "a folder as scan, named so", "error", r"bad\.nii\.gz.*is a folder", lambda p: p.mkdir()
)


@case(
    "predict: a header declaring 2000^3 voxels",
    "error",
    r"huge\.nii.*2000 x 2000 x 2000.*--max-voxels",
)
def _(tmp, fx):
    _declared(tmp / "huge.nii", (2000, 2000, 2000))
    return _predict(fx, str(tmp / "huge.nii"), tmp)


@case("predict: a scan beyond --max-voxels", "error", r"scan\.nii\.gz.*budget of 1,000 voxels")
def _(tmp, fx):
    return _predict(fx, fx.scan, tmp, "--max-voxels", "1000")


@case("predict: names a shell can make: non-UTF-8, space, dash, newline (valid)", "ok", "")
def _(tmp, fx):
    names = [b"caf\xe9.nii.gz", b"with space.nii.gz", b"-dash.nii.gz", b"new\nline.nii.gz"]
    for i, name in enumerate(names):
        write(tmp / "in" / os.fsdecode(name), volume(30 + i))
    return ["predict", fx.model, "--glob", str(tmp / "in" / "*.nii.gz"), "-o", _out(tmp)]


@case("predict: a scan named like an option, after -- (valid)", "ok", "")
def _(tmp, fx):
    write(tmp / "-x.nii.gz", volume(30))
    return ["predict", fx.model, "-o", _out(tmp), "--", "-x.nii.gz"]


@case("brain-extract: a bad option is said once, not once per scan", "error", r"--threshold.*2")
def _(tmp, fx):
    return ["brain-extract", *fx.healthy, "-o", _out(tmp), "--threshold", "2"]


@case("predict: output folder under a regular file", "error", r"out")
def _(tmp, fx):
    (tmp / "file").write_text("x")
    return ["predict", fx.model, fx.scan, "-o", str(tmp / "file" / "out")]


@case("predict: output folder is a file", "error", r"out.*(file|exists|directory)")
def _(tmp, fx):
    (tmp / "out").write_text("x")
    return _predict(fx, fx.scan, tmp)


@case("predict: outputs exist already (skipped, as a rerun)", "ok", "")
def _(tmp, fx):
    from anomseg.cli import main

    with _quiet():
        main([*_predict(fx, fx.scan, tmp), "--no-progress"])
    return _predict(fx, fx.scan, tmp)


@case("predict: one output exists without its partner", "error", r"scan_mask.*--overwrite")
def _(tmp, fx):
    (tmp / "out").mkdir()
    (tmp / "out" / "scan_mask.nii.gz").write_bytes(b"mine")
    return _predict(fx, fx.scan, tmp)


def _clash(tmp):
    a = write(tmp / "a" / "scan.nii.gz", volume(4))
    b = write(tmp / "b" / "scan.nii.gz", volume(5))
    return a, b


@case("predict: two scans of one name", "error", r"would both write.*--keep-tree")
def _(tmp, fx):
    return ["predict", fx.model, *_clash(tmp), "-o", _out(tmp)]


@case("predict: two scans of one name with --keep-tree (valid)", "ok", "")
def _(tmp, fx):
    return ["predict", fx.model, *_clash(tmp), "-o", _out(tmp), "--keep-tree"]


@case("predict: one scan given twice", "error", r"scan\.nii\.gz.*twice")
def _(tmp, fx):
    return ["predict", fx.model, fx.scan, fx.scan, "-o", _out(tmp)]


@case(
    "predict: one scan given twice, as a hard link", "error", r"l\.nii\.gz.*twice.*scan\.nii\.gz"
)
def _(tmp, fx):
    os.link(fx.scan, tmp / "l.nii.gz")
    return ["predict", fx.model, fx.scan, str(tmp / "l.nii.gz"), "-o", _out(tmp)]


@case("fit: one healthy scan given twice (warns)", "warning", r"healthy0\.nii\.gz.*twice")
def _(tmp, fx):
    return _fit(fx, tmp, scans=[fx.healthy[0], *fx.healthy])


@case("evaluate: one scan given twice (warns)", "warning", r"\.nii\.gz.*given twice.*counts")
def _(tmp, fx):
    return ["evaluate", fx.model, fx.scan, fx.scan, "--truth", fx.truth, fx.truth]


@case("predict: a truncated scan among good ones", "error", r"bad\.nii\.gz")
def _(tmp, fx):
    bad = tmp / "bad.nii.gz"
    _truncated(bad)
    return ["predict", fx.model, fx.scan, str(bad), fx.scan2, "-o", _out(tmp)]


# -- model files -------------------------------------------------------------------
class _Payload:
    """Runs code when unpickled: creates the file it names."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _model_case(name, words, make, expect="error", command="predict", extra=()):
    @case(f"{command}: {name}", expect, words, marker=True)
    def build(tmp, fx):
        path = tmp / "crafted.anomseg"
        make(path, fx, str(tmp / "ran"))
        if command == "info":
            return ["info", str(path), *extra]
        return ["predict", str(path), fx.scan, "-o", _out(tmp), *extra]


def _safe_payload(fx):
    import torch

    return torch.load(fx.safe_model, weights_only=True)


def _save_payload(path, payload):
    import torch

    torch.save(payload, path)


def _recrafted(edit):
    """A copy of the fixture model whose payload ``edit`` changed, the
    checksum recomputed as an attacker would."""

    def make(path, fx, marker):
        from anomseg.persistence._format import checksum

        payload = _safe_payload(fx)
        edit(payload)
        payload["checksum"] = checksum(payload["model"], payload["info"], payload["state_dict"])
        _save_payload(path, payload)

    return make


def _record_edit(edit):
    def change(payload):
        record = json.loads(payload["model"])
        edit(record)
        payload["model"] = json.dumps(record)

    return change


def _pickle(path, fx, marker):
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=4))


def _joblib(path, fx, marker):
    import joblib

    joblib.dump(_Payload(marker), path, compress=3)


def _pickle_in_torch(path, fx, marker):
    _save_payload(path, {"format": "anomseg.torch_model", "model": _Payload(marker)})


def _pickle_in_weights(path, fx, marker):
    payload = _safe_payload(fx)
    payload["state_dict"] = {"weight": _Payload(marker)}
    _save_payload(path, payload)


def _changed(**changes):
    def make(path, fx, marker):
        payload = _safe_payload(fx)
        payload.update(changes)
        _save_payload(path, payload)

    return make


def _tampered(path, fx, marker):
    payload = _safe_payload(fx)
    payload["model"] = payload["model"].replace('"max_fpr": 0.05', '"max_fpr": 0.5')
    _save_payload(path, payload)


def _truncated_model(path, fx, marker):
    path.write_bytes(Path(fx.safe_model).read_bytes()[:300])


_model_case("pickle payload", r"pickle.*--trust-pickle", _pickle)
_model_case("joblib-compressed payload", r"pickle.*--trust-pickle", _joblib)
_model_case("pickle inside the torch file", r"crafted.*(refused|not a safe)", _pickle_in_torch)
_model_case("pickle in place of weights", r"crafted.*(refused|not a safe)", _pickle_in_weights)
_model_case(
    "class off the allow-list",
    r"crafted.*rebuilds only",
    _recrafted(_record_edit(lambda r: r.update(estimator="Pipeline"))),
)
_model_case(
    "another class on the allow-list",
    r"crafted.*not hold a valid VAERestorer",
    _recrafted(_record_edit(lambda r: r.update(estimator="VAERestorer"))),
)
_model_case(
    "a pipeline whose step is off the allow-list",
    r"crafted.*rebuilds only",
    _recrafted(
        _record_edit(
            lambda r: r.update(
                estimator="AnomalyPipeline",
                params={"memory": None, "verbose": False, "transform_input": None},
                attributes={},
                steps=[["evil", {"estimator": "eval", "params": {}, "attributes": {}}]],
            )
        )
    ),
)
_model_case(
    "nested estimator off the allow-list",
    r"crafted.*not an estimator of anomseg",
    _recrafted(
        _record_edit(lambda r: r["params"].update(n_bins={"__estimator__": ["system", {}]}))
    ),
)
_model_case(
    "attribute that is not fitted state",
    r"crafted.*not a fitted attribute",
    _recrafted(_record_edit(lambda r: r["attributes"].update(__class__="x"))),
)
_model_case(
    "a smoothing that would run for minutes (10^6 voxels)",
    r"crafted.*smoothing",
    _recrafted(_record_edit(lambda r: r["params"].update(smoothing=1e6))),
)
_model_case(
    "histogram bins that would take terabytes (10^12)",
    r"crafted.*n_bins",
    _recrafted(_record_edit(lambda r: r["params"].update(n_bins=10**12))),
)
_model_case("tampered content, old checksum", r"crafted.*checksum", _tampered)
_model_case("tampered checksum", r"crafted.*checksum", _changed(checksum="sha256:" + "0" * 64))
_model_case("newer format version", r"crafted.*format version", _changed(format_version=3))
_model_case("truncated model file", r"crafted.*(not a safe|refused)", _truncated_model)
_model_case(
    "text file as model",
    r"crafted.*not an anomseg model file",
    lambda p, fx, m: p.write_text("weights"),
)
_model_case(
    "empty model file", r"crafted.*not an anomseg model file", lambda p, fx, m: p.write_bytes(b"")
)
_model_case("pickle payload", r"crafted.*pickle", _pickle, command="info")
_model_case("tampered content", r"crafted.*checksum", _tampered, command="info")


@case("predict: missing model file", "error", r"missing\.anomseg")
def _(tmp, fx):
    return ["predict", str(tmp / "missing.anomseg"), fx.scan, "-o", _out(tmp)]


@case("predict: folder as model file", "error", r"models")
def _(tmp, fx):
    (tmp / "models").mkdir()
    return ["predict", str(tmp / "models"), fx.scan, "-o", _out(tmp)]


@case("predict: a trusted pickle with --trust-pickle (valid, warns)", "warning", r"pickle")
def _(tmp, fx):
    from anomseg import load_model

    path = tmp / "model.joblib"
    load_model(fx.safe_model).save(path, format="pickle")
    return ["predict", str(path), fx.scan, "-o", _out(tmp), "--trust-pickle"]


@case("info: a safe model (valid)", "ok", "")
def _(tmp, fx):
    return ["info", fx.model]


# -- fit ---------------------------------------------------------------------------
def _fit(fx, tmp, *extra, method="flair-threshold", scans=None):
    scans = fx.healthy if scans is None else scans
    return ["fit", "--method", method, *scans, "-o", str(tmp / "m.anomseg"), *extra]


def _fit_case(name, words, *extra, method="flair-threshold", expect="error"):
    @case(f"fit: {name}", expect, words)
    def build(tmp, fx):
        return _fit(fx, tmp, *extra, method=method)


for value in ("0", "1", "-0.1", "1.5", "nan", "inf"):
    _fit_case(f"--max-fpr {value}", r"--max-fpr.*\(0\.0, 1\.0\)", "--max-fpr", value)
_fit_case("--max-fpr abc", r"max-fpr.*abc", "--max-fpr", "abc")
_fit_case("max_fpr through --param", r"max_fpr.*--max-fpr", "--param", "max_fpr=0.5")
_fit_case("unknown method", r"method.*bogus", method="bogus")
_fit_case("unknown parameter", r"bogus", "--param", "bogus=1")
_fit_case("parameter of a wrong type", r"n_bins", "--param", "n_bins='abc'")
_fit_case("parameter out of range", r"n_bins", "--param", "n_bins=1")
_fit_case("float where an int is expected", r"width", "--param", "width=2.5", method="vae")
_fit_case("malformed --param", r"KEY=VALUE", "--param", "n_bins")
_fit_case("--unlabelled for a method without", r"--unlabelled", "--unlabelled", "x.nii.gz")


@case("fit: single-image training set", "error", r"at least 2")
def _(tmp, fx):
    return _fit(fx, tmp, "--param", "n_epochs=1", method="vae", scans=fx.healthy[:1])


@case("fit: mixed shapes (valid: the 2D networks pad any in-plane size)", "ok")
def _(tmp, fx):
    other = write(tmp / "big.nii.gz", volume(7, shape=(32, 32, 6)))
    tiny = ["n_epochs=1", "width=4", "tv_weight=1.0", "n_restoration_steps=2", "device='cpu'"]
    params = [token for value in tiny for token in ("--param", value)]
    return _fit(fx, tmp, *params, method="vae", scans=[*fx.healthy, other])


@case("fit: NaN in a healthy scan", "error", r"bad\.nii\.gz.*NaN")
def _(tmp, fx):
    bad = tmp / "bad.nii.gz"
    _with(np.nan)(bad)
    return _fit(fx, tmp, scans=[*fx.healthy, str(bad)])


@case("fit: a truncated healthy scan", "error", r"bad\.nii\.gz")
def _(tmp, fx):
    bad = tmp / "bad.nii.gz"
    _truncated(bad)
    return _fit(fx, tmp, scans=[*fx.healthy, str(bad)])


@case("fit: missing healthy scan", "error", r"missing\.nii\.gz")
def _(tmp, fx):
    return _fit(fx, tmp, scans=[*fx.healthy, str(tmp / "missing.nii.gz")])


@case("fit: existing model without --overwrite", "error", r"m\.anomseg.*--overwrite")
def _(tmp, fx):
    (tmp / "m.anomseg").write_bytes(b"precious")
    return _fit(fx, tmp)


@case("fit: model path under a regular file", "error", r"file")
def _(tmp, fx):
    (tmp / "file").write_text("x")
    return ["fit", "--method", "flair-threshold", *fx.healthy, "-o", str(tmp / "file" / "m")]


@case("fit: model path is a folder", "error", r"folder")
def _(tmp, fx):
    (tmp / "models").mkdir()
    return ["fit", "--method", "flair-threshold", *fx.healthy, "-o", str(tmp / "models")]


# -- fit on patient scans (--exclude) ---------------------------------------------
def _masks(tmp, fx, **special):
    """One lesion mask per healthy scan (a 4 x 4 x 2 box), written in tmp;
    ``special`` maps an index to the data (or a callable writing the file)
    of that mask instead."""
    paths = []
    for i in range(len(fx.healthy)):
        path = tmp / f"m{i}.nii.gz"
        make = special.get(f"m{i}")
        if callable(make):
            make(path)
        else:
            data = np.zeros(SHAPE, np.uint8) if make is None else make
            if make is None:
                data[10:14, 10:14, 2:4] = 1
            write(path, data)
        paths.append(str(path))
    return paths


def _exclude_case(name, expect, words, *extra, **special):
    @case(f"fit: {name}", expect, words)
    def build(tmp, fx):
        return _fit(fx, tmp, "--exclude", *_masks(tmp, fx, **special), *extra)


def _shifted_mask(path):
    shifted = AFFINE.copy()
    shifted[:3, 3] += 5
    write(path, np.zeros(SHAPE, np.uint8), affine=shifted)


_exclude_case("lesion masks to leave out (valid)", "ok", "")
_exclude_case(
    "--exclude with --exclude-margin and --exclude-slices (valid)",
    "ok",
    "",
    "--exclude-margin",
    "1",
    "--exclude-slices",
)
_exclude_case("--exclude mask on a shifted grid", "error", r"m1\.nii\.gz.*grid", m1=_shifted_mask)
_exclude_case(
    "--exclude mask of another shape",
    "error",
    r"m1\.nii\.gz.*grid",
    m1=np.zeros((20, 20, 6), np.uint8),
)
_exclude_case(
    "--exclude mask of labels 0 and 2",
    "error",
    r"m2\.nii\.gz.*binary",
    m2=np.full(SHAPE, 2, np.uint8),
)
_exclude_case(
    "--exclude mask of probabilities",
    "error",
    r"m0\.nii\.gz.*binary",
    m0=np.full(SHAPE, 0.5, np.float32),
)
_exclude_case("--exclude mask missing", "error", r"m1\.nii\.gz", m1=lambda path: None)
_exclude_case(
    "--exclude mask covering a whole scan (valid, warns)",
    "warning",
    r"no foreground voxel of '.*healthy1\.nii\.gz'",
    m1=np.ones(SHAPE, np.uint8),
)
_exclude_case(
    "--exclude masks covering every scan",
    "error",
    r"no foreground voxel in any",
    **{f"m{i}": np.ones(SHAPE, np.uint8) for i in range(3)},
)
_exclude_case("--exclude-margin -1", "error", r"--exclude-margin.*>= 0", "--exclude-margin", "-1")
_exclude_case(
    "--exclude-margin 1.5", "error", r"--exclude-margin.*1\.5", "--exclude-margin", "1.5"
)


@case("fit: fewer --exclude masks than scans", "error", r"3 healthy scan.*2 --exclude")
def _(tmp, fx):
    return _fit(fx, tmp, "--exclude", *_masks(tmp, fx)[:2])


@case("fit: an --exclude mask per scan and one more", "error", r"3 healthy scan.*4 --exclude")
def _(tmp, fx):
    masks = _masks(tmp, fx)
    return _fit(fx, tmp, "--exclude", *masks, masks[0])


_fit_case(
    "--exclude-margin without --exclude", r"--exclude-margin.*--exclude", "--exclude-margin", "1"
)
_fit_case("--exclude-slices without --exclude", r"--exclude-slices.*--exclude", "--exclude-slices")

# -- fit: post-processing and ensembles ------------------------------------------
_fit_case("--min-size -1", r"--min-size.*>= 0", "--min-size", "-1")
_fit_case("--opening 1.5", r"--opening.*1\.5", "--opening", "1.5")
_fit_case("--closing -1", r"--closing.*\[0, 50\]", "--closing", "-1")
_fit_case(
    "postprocessing through --param", r"postprocessing.*--min-size", "--param", "postprocessing=[]"
)
_fit_case("--opening 100000 (171 PiB)", r"--opening.*\[0, 50\]", "--opening", "100000")
_fit_case("--smoothing 0", r"--smoothing.*\(0, 64\]", "--smoothing", "0")
_fit_case("--smoothing 10^6 (minutes)", r"--smoothing.*\(0, 64\]", "--smoothing", "1e6")
_fit_case("--smoothing of 4 axes", r"--smoothing.*per", "--smoothing", "1,1,1,1")
_fit_case("--smoothing not a number", r"--smoothing.*'wide'", "--smoothing", "wide")
_fit_case("smoothing through --param", r"smoothing.*--smoothing", "--param", "smoothing=1.0")
_fit_case("--spacing 0", r"--spacing.*\(0, 1000\] mm.*'0'", "--spacing", "0")
_fit_case("--spacing of 2 axes", r"--spacing.*3 of them.*'1,1'", "--spacing", "1,1")
_fit_case("--spacing not a number", r"--spacing.*'fine'", "--spacing", "fine")
_fit_case("--n-jobs without an ensemble", r"--n-jobs.*ensemble", "--n-jobs", "2")
_fit_case("--ensemble 0", r"--ensemble.*>= 1", "--ensemble", "0")
_fit_case("--n-jobs 0", r"--n-jobs.*>= 1", "--n-jobs", "0")
_fit_case("one --method twice", r"--method once", "--method", "flair-threshold")
_fit_case(
    "a parameter no member of an ensemble has",
    r"--param nonsense",
    "--method",
    "denoising-ae",
    "--param",
    "nonsense=1",
)
_fit_case(
    "a parameter the method it names lacks",
    r"--param denoising-ae:n_bins",
    "--method",
    "denoising-ae",
    "--param",
    "denoising-ae:n_bins=64",
)
_fit_case(
    "a parameter for a method not given",
    r"denoising-ae:width.*--method",
    "--param",
    "denoising-ae:width=4",
)
_fit_case("a parameter for an unknown method", r"bogus:width", "--param", "bogus:width=4")

_fit_case("a --param given twice", r"--param n_bins is given twice", "--param", "n_bins=64",
          "--param", "n_bins=128")  # fmt: skip
_fit_case("a misspelt --param", r"n_bin: .*did you mean n_bins\?", "--param", "n_bin=64")


@case("fit: lesion masks as healthy scans", "error", r"look like masks")
def _(tmp, fx):
    masks = [write(tmp / f"m{i}.nii.gz", np.roll(_box(), 3 * i, axis=0)) for i in range(3)]
    return _fit(fx, tmp, scans=masks)


@case(
    "fit: healthy scans of two values (warns: degenerate threshold)",
    "warning",
    r"flags none of the",
)
def _(tmp, fx):
    scans = []
    for i in range(3):
        v = volume(i)
        v = np.where(v > 0, np.where(v > np.median(v[v > 0]), 100.5, 50.5), 0)
        scans.append(write(tmp / f"flat{i}.nii.gz", v))
    return _fit(fx, tmp, scans=scans)


def _box():
    truth = np.zeros(SHAPE, np.uint8)
    truth[10:14, 10:14, 2:4] = 1
    return truth


# -- evaluate ----------------------------------------------------------------------
def _evaluate(fx, truth):
    return ["evaluate", fx.model, fx.scan, "--truth", truth]


@case("evaluate: non-binary truth", "error", r"t\.nii\.gz.*binary")
def _(tmp, fx):
    labels = np.asarray(nib.load(fx.truth).dataobj) * 2
    labels[0, 0, 0] = 1
    return _evaluate(fx, write(tmp / "t.nii.gz", labels))


@case("evaluate: truth on a shifted grid", "error", r"t\.nii\.gz.*grid")
def _(tmp, fx):
    shifted = AFFINE.copy()
    shifted[:3, 3] += 5
    return _evaluate(fx, write(tmp / "t.nii.gz", nib.load(fx.truth).dataobj, affine=shifted))


@case("evaluate: truth of another shape", "error", r"t\.nii\.gz.*grid")
def _(tmp, fx):
    return _evaluate(fx, write(tmp / "t.nii.gz", np.zeros((20, 20, 6), np.uint8)))


@case("evaluate: one mask for two scans", "error", r"one mask per scan")
def _(tmp, fx):
    return ["evaluate", fx.model, fx.scan, fx.scan2, "--truth", fx.truth]


@case("evaluate: missing truth", "error", r"missing\.nii\.gz")
def _(tmp, fx):
    return _evaluate(fx, str(tmp / "missing.nii.gz"))


@case("evaluate: valid", "ok", "")
def _(tmp, fx):
    return _evaluate(fx, fx.truth)


@case("evaluate: -o of another suffix", "error", r"r\.txt.*\.json or \.csv")
def _(tmp, fx):
    return [*_evaluate(fx, fx.truth), "-o", str(tmp / "r.txt")]


@case("evaluate: -o that exists, without --overwrite", "error", r"r\.json.*--overwrite")
def _(tmp, fx):
    (tmp / "r.json").write_text("precious")
    return [*_evaluate(fx, fx.truth), "-o", str(tmp / "r.json")]


@case("evaluate: -o in a missing folder", "error", r"r\.csv.*does not exist")
def _(tmp, fx):
    return [*_evaluate(fx, fx.truth), "-o", str(tmp / "missing" / "r.csv")]


@case("evaluate: -o a folder", "error", r"r\.json.*folder")
def _(tmp, fx):
    (tmp / "r.json").mkdir()
    return [*_evaluate(fx, fx.truth), "-o", str(tmp / "r.json")]


@case("evaluate: -o FILE.csv (valid)", "ok", "")
def _(tmp, fx):
    return [*_evaluate(fx, fx.truth), "-o", str(tmp / "r.csv")]


@case(
    "evaluate: a truth with no lesion",
    "error",
    r"t\.nii\.gz.*no lesion.*undefined|undefined.*t\.nii\.gz.*no lesion",
)
def _(tmp, fx):
    return _evaluate(fx, write(tmp / "t.nii.gz", np.zeros(SHAPE, np.uint8)))


@case(
    "evaluate: a lesion outside the foreground",
    "error",
    r"undefined.*t\.nii\.gz.*outside the foreground",
)
def _(tmp, fx):
    truth = np.zeros(SHAPE, np.uint8)
    truth[0:2, 0:2, 0:2] = 1
    return _evaluate(fx, write(tmp / "t.nii.gz", truth))


@case(
    "evaluate: a lesion-free truth among others (warns)", "warning", r"t\.nii\.gz.*no lesion voxel"
)
def _(tmp, fx):
    empty = write(tmp / "t.nii.gz", np.zeros(SHAPE, np.uint8))
    return ["evaluate", fx.model, fx.scan, fx.scan2, "--truth", fx.truth, empty]


@case("evaluate: truths in another order than the scans (warns, pairs by name)", "warning",
      r"paired with the scans by file name.*a\.nii\.gz' with '.*a_seg\.nii\.gz'")  # fmt: skip
def _(tmp, fx):
    scans, truths = [], []
    for k, name in enumerate("abc"):
        truth = np.zeros(SHAPE, np.uint8)
        truth[4 + 5 * k : 8 + 5 * k, 8:12, 1:4] = 1
        scan = volume(20 + k)
        scan[truth > 0] *= 1.8
        scans.append(write(tmp / f"{name}.nii.gz", scan))
        truths.append(write(tmp / f"{name}_seg.nii.gz", truth))
    return ["evaluate", fx.model, *scans, "--truth", truths[1], truths[0], truths[2]]


# -- the Python API ----------------------------------------------------------------
def _api_case(name, expect, words):
    return case(f"API: {name}", expect, words, interface="api")


def _flair(**params):
    from anomseg.baselines import FlairThreshold

    return FlairThreshold(**params)


def _images():
    from anomseg.datasets import make_healthy_images

    return make_healthy_images(n_images=8, shape=(24, 24), random_state=0)


def _fit_call(estimator, X):
    return lambda: estimator.fit(X)


@_api_case("empty list", "error", r"X passed to FlairThreshold.fit is empty")
def _(tmp, fx):
    return _fit_call(_flair(), [])


@_api_case("empty array", "error", r"empty")
def _(tmp, fx):
    return _fit_call(_flair(), np.zeros((0, 24, 24)))


@_api_case("NaN in the foreground", "error", r"NaN")
def _(tmp, fx):
    X = _images()
    X[0, 12, 12] = np.nan
    return _fit_call(_flair(), X)


@_api_case("complex images", "error", r"real numbers.*complex")
def _(tmp, fx):
    return _fit_call(_flair(), _images().astype(np.complex64))


@_api_case("boolean images", "error", r"real numbers.*bool")
def _(tmp, fx):
    return _fit_call(_flair(), _images() > 0)


@_api_case("a string as images", "error", r"must be an array")
def _(tmp, fx):
    return _fit_call(_flair(), "scans/*.nii.gz")


@_api_case("1D array", "error", r"dimensions")
def _(tmp, fx):
    return _fit_call(_flair(), np.ones(10))


@_api_case("2D images mixed with 3D volumes", "error", r"mixes 2D images and 3D volumes")
def _(tmp, fx):
    return _fit_call(_flair(), [np.ones((8, 8)) + np.eye(8), np.ones((8, 8, 4))])


for value in (1.5, 0.0, -1, float("nan"), "0.1"):

    @_api_case(f"max_fpr={value!r}", "error", r"'max_fpr' parameter of FlairThreshold")
    def _(tmp, fx, value=value):
        return _fit_call(_flair(max_fpr=value), _images())


@_api_case("width=0 of a prior", "error", r"'width' parameter of VAERestorer")
def _(tmp, fx):
    from anomseg.restoration import VAERestorer

    return _fit_call(VAERestorer(width=0), _images())


@_api_case("single training image for a learned prior", "error", r"at least 2")
def _(tmp, fx):
    from anomseg.restoration import VAERestorer

    return _fit_call(VAERestorer(width=4, n_epochs=1, device="cpu"), _images()[:1])


@_api_case("predict before fit", "error", r"not fitted|fit")
def _(tmp, fx):
    return lambda: _flair().predict(_images())


@_api_case("scoring blank images with a learned prior", "warning", r"foreground fraction")
def _(tmp, fx):
    from anomseg.restoration import VAERestorer

    model = VAERestorer(width=4, n_epochs=1, n_restoration_steps=1, tv_weight=1.0, device="cpu")
    model.fit(_images())
    return lambda: model.score_samples(np.ones((2, 32, 32)))


@_api_case("scoring a ragged nested list", "error", r"X\[0\].*could not be read as an array")
def _(tmp, fx):
    model = _flair().fit(_images())
    return lambda: model.score_samples([[[1.0, 2.0], [3.0]]])


@_api_case("scoring images of another intensity scale", "warning", r"intensity p50")
def _(tmp, fx):
    from anomseg.restoration import VAERestorer

    model = VAERestorer(width=4, n_epochs=1, n_restoration_steps=1, tv_weight=1.0, device="cpu")
    model.fit(_images())
    return lambda: model.score_samples(_images() * 1000)


@_api_case("save under a regular file", "error", r"does not exist")
def _(tmp, fx):
    (tmp / "file").write_text("x")
    model = _flair().fit(_images())
    return lambda: model.save(tmp / "file" / "m.anomseg")


@_api_case("save over an existing file", "error", r"exists; pass overwrite=True")
def _(tmp, fx):
    (tmp / "m.anomseg").write_bytes(b"precious")
    model = _flair().fit(_images())
    return lambda: model.save(tmp / "m.anomseg")


@_api_case("save metadata that is not JSON", "error", r"'metadata'.*plain JSON")
def _(tmp, fx):
    model = _flair().fit(_images())
    return lambda: model.save(tmp / "m.anomseg", metadata={"date": object()})


def _loader_case(name, loader):
    for kind, make in (
        ("pickle", _pickle),
        ("pickle inside the torch file", _pickle_in_torch),
        ("tampered content", _tampered),
    ):

        @case(f"API: {name} of a crafted file ({kind})", "error", r"crafted", "api", marker=True)
        def build(tmp, fx, make=make):
            path = tmp / "crafted.anomseg"
            make(path, fx, str(tmp / "ran"))
            return lambda: loader(path)


def _load_model(path):
    from anomseg import load_model

    return load_model(path)


def _pipeline_load(path):
    from anomseg.preprocessing import AnomalyPipeline

    return AnomalyPipeline.load(path)


def _estimator_load(path):
    from anomseg.baselines import FlairThreshold

    return FlairThreshold.load(path)


def _deprecated_load(path):
    from anomseg import io as anomseg_io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return anomseg_io.load_model(path)


def _deprecated_load_torch(path):
    from anomseg import io as anomseg_io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return anomseg_io.load_torch_model(path)


def _model_info(path):
    from anomseg import model_info

    return model_info(path)


for _name, _loader in (
    ("load_model", _load_model),
    ("AnomalyPipeline.load", _pipeline_load),
    ("FlairThreshold.load", _estimator_load),
    ("anomseg.io.load_model (deprecated)", _deprecated_load),
    ("anomseg.io.load_torch_model (deprecated)", _deprecated_load_torch),
    ("model_info", _model_info),
):
    _loader_case(_name, _loader)


# -- running and classing ----------------------------------------------------------
@dataclass
class Result:
    status: int
    stdout: str = ""
    stderr: str = ""
    traceback: bool = False


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _quietly(argv):
    """``argv`` with ``--no-progress``, before a ``--`` that ends the options."""
    argv = list(argv)
    at = argv.index("--") if "--" in argv else len(argv)
    return [*argv[:at], "--no-progress", *argv[at:]]


def run_in_process(argv, cwd):
    """The command line run by ``anomseg.cli.main`` in this process, with
    Python's default warning filters, as a user's shell would see it."""
    from anomseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    try:
        os.chdir(cwd)
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(),
        ):
            warnings.resetwarnings()
            warnings.simplefilter("default")
            try:
                status = main(_quietly(argv))
            except SystemExit as exc:  # argparse
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc(file=err)
                return Result(1, out.getvalue(), err.getvalue(), traceback=True)
    finally:
        os.chdir(previous)
    return Result(status, out.getvalue(), err.getvalue(), "Traceback" in err.getvalue())


def subprocess_runner(pythonpath=None):
    """The command line run as ``python -m anomseg``, importing anomseg
    from ``pythonpath`` if given."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)

    def run(argv, cwd):
        completed = subprocess.run(
            [sys.executable, "-m", "anomseg", *_quietly(argv)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return Result(
            completed.returncode,
            completed.stdout,
            completed.stderr,
            "Traceback" in completed.stderr,
        )

    return run


def run_api(call):
    """The outcome of an API call as a Result: the exception's message as
    an error line, each warning as a warning line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        try:
            call()
        except Exception as exc:  # the error the user sees
            lines = [f"error: {type(exc).__name__}: {exc}"]
            return Result(1, "", "\n".join(lines))
    lines = [f"warning: {w.category.__name__}: {w.message}" for w in caught]
    return Result(0, "", "\n".join(lines))


def _snapshot(tmp):
    return {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}


def outputs_whole(tmp, before):
    """Whether ``tmp`` holds no temporary file, only complete map/mask
    pairs among the new files, and its earlier files unchanged."""
    for path, content in before.items():
        if not path.exists() or path.read_bytes() != content:
            return False
    for path in tmp.rglob("*"):
        if path.name.startswith(".") or path in before or not path.is_file():
            if path.name.startswith("."):
                return False
            continue
        for mine, partner in (("_anomaly_map", "_mask"), ("_mask", "_anomaly_map")):
            if path.name.endswith(f"{mine}.nii.gz"):
                other = path.with_name(path.name.replace(f"{mine}.nii.gz", f"{partner}.nii.gz"))
                if not other.exists():
                    return False
                try:
                    np.asarray(nib.load(path).dataobj)
                except Exception:
                    return False
    return True


def _error_lines(text):
    return [line for line in text.splitlines() if re.search(r"\berror\b", line, re.IGNORECASE)]


def _warning_lines(text):
    return [line for line in text.splitlines() if re.search(r"warning", line, re.IGNORECASE)]


def classify(case_, result, whole, ran_code):
    """The class of one outcome: "clear", "misleading", "traceback" or
    "silent" (see the module's docstring)."""
    if result.traceback:
        return "traceback"
    if ran_code:
        return "silent"  # worse than silent, but no message told of it
    errors, warned = _error_lines(result.stderr), _warning_lines(result.stderr)
    if case_.expect == "ok":
        return "clear" if result.status == 0 and not errors and whole else "misleading"
    if case_.expect == "warning":
        named = [line for line in warned + errors if re.search(case_.words, line)]
        if not named:
            return "silent" if result.status == 0 and not errors else "misleading"
        return "clear" if whole else "misleading"
    if result.status == 0 and not errors:
        return "silent"
    if result.status == 0 or not whole:
        return "misleading"
    named = len(errors) == 1 and re.search(case_.words, errors[0])
    return "clear" if named else "misleading"


def run_case(case_, tmp, fixtures, cli=run_in_process):
    """Build and run one case in the folder ``tmp``; returns (class, result)."""
    tmp = Path(tmp)
    built = case_.build(tmp, fixtures)
    before = _snapshot(tmp)
    result = run_api(built) if case_.interface == "api" else cli(built, tmp)
    whole = outputs_whole(tmp, before)
    if case_.expect == "error" and case_.interface == "cli" and built[0] in ("fit", "evaluate"):
        # a failed fit writes no model, a failed evaluate no report
        whole = whole and not [p for p in _snapshot(tmp) if p not in before]
    ran = (tmp / "ran").exists()
    return classify(case_, result, whole, ran), result


def main(argv=None):
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pythonpath", help="Import anomseg from here (an older checkout).")
    parser.add_argument(
        "--interface", choices=("cli", "api"), default="cli", help="Which cases to run."
    )
    args = parser.parse_args(argv)
    cli = subprocess_runner(args.pythonpath)
    counts = {"clear": 0, "misleading": 0, "traceback": 0, "silent": 0, "not applicable": 0}
    with tempfile.TemporaryDirectory() as root:
        fixtures = Fixtures(Path(root) / "fixtures", cli)
        for i, case_ in enumerate(CASES):
            if case_.interface != args.interface:
                continue
            tmp = Path(root) / f"case{i}"
            tmp.mkdir()
            try:
                kind, result = run_case(case_, tmp, fixtures, cli)
            except Exception as exc:  # a case that needs what this anomseg lacks
                kind, result = "not applicable", Result(0, "", f"build: {exc!r}")
            counts[kind] += 1
            lines = _error_lines(result.stderr) + _warning_lines(result.stderr)
            message = (lines or [result.stderr.strip()[-150:]])[0]
            print(f"{kind:10s} {case_.name}: exit {result.status}; {message[:150]}", flush=True)
    print(" | ".join(f"{k} {v}" for k, v in counts.items()), f"| total {sum(counts.values())}")


if __name__ == "__main__":
    main()
