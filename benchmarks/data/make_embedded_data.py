"""Build the embedded MSLUB demo data shipped in ``anomseg/datasets/data/``.

Reads the FLAIR, T2 and lesion masks of the three MSLUB patients from
``mslub`` of the shared data folder (``--data``) and writes small uint8
copies into the package (or ``--target``):

1. volumes are reoriented to the closest canonical (RAS+) orientation;
2. all are cropped to the union of the three brain bounding boxes (brain =
   FLAIR > 0), and the affine's translation is moved by the crop offset so
   that the voxels keep their MNI coordinates;
3. intensities are quantised per volume and modality: 0 outside the brain,
   ``1 + round(clip(x, 0, p) / p * 254)`` inside, where ``p`` is the 99.9th
   percentile inside the brain;
4. files are gzipped at level 9 with a zero timestamp, so that running the
   script twice gives byte-identical files.

Run from the repository root (``--json`` writes the crop and each file's
size and SHA-256)::

    python -m benchmarks.data.make_embedded_data
"""

import gzip
import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks._common import benchmark_parser, data_folder, write_json

TARGET = Path(__file__).resolve().parents[2] / "anomseg" / "datasets" / "data"
SUBJECTS = ("patient07", "patient19", "patient26")
MODALITIES = ("flair", "t2")
PERCENTILE = 99.9


def load_canonical(path):
    image = nib.as_closest_canonical(nib.load(path))
    return np.asarray(image.dataobj, dtype=np.float32), image.affine


def brain_bounding_box(source):
    """Slices of the union bounding box of FLAIR > 0 over all subjects."""
    low, high, affine = None, None, None
    for subject in SUBJECTS:
        flair, subject_affine = load_canonical(source / f"{subject}_flair.nii.gz")
        if affine is None:
            affine = subject_affine
        elif not np.allclose(affine, subject_affine):
            raise ValueError(f"{subject} is not on the grid of {SUBJECTS[0]}.")
        coords = np.argwhere(flair > 0)
        lo, hi = coords.min(axis=0), coords.max(axis=0) + 1
        low = lo if low is None else np.minimum(low, lo)
        high = hi if high is None else np.maximum(high, hi)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high)), affine


def quantise(volume, brain):
    """0 outside the brain, 1..255 inside, scaled by the 99.9th percentile."""
    top = np.percentile(volume[brain], PERCENTILE)
    scaled = np.clip(volume, 0, top) / top * 254
    return np.where(brain, 1 + np.round(scaled), 0).astype(np.uint8)


def write(data, affine, path):
    image = nib.Nifti1Image(data, affine)
    image.set_data_dtype(np.uint8)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code="mni")
    image.set_sform(affine, code="mni")
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as zipped,
    ):
        zipped.write(image.to_bytes())


def build(source, target):
    """Write the embedded files from ``source`` into ``target``; returns
    the crop and each file's size and SHA-256."""
    box, affine = brain_bounding_box(source)
    offset = np.array([s.start for s in box])
    cropped_affine = affine.copy()
    cropped_affine[:3, 3] = affine[:3, :3] @ offset + affine[:3, 3]
    print("crop:", ", ".join(f"{s.start}:{s.stop}" for s in box))
    target.mkdir(parents=True, exist_ok=True)
    for subject in SUBJECTS:
        flair, _ = load_canonical(source / f"{subject}_flair.nii.gz")
        brain = flair > 0
        for modality in MODALITIES:
            volume, _ = load_canonical(source / f"{subject}_{modality}.nii.gz")
            write(
                quantise(volume, brain)[box],
                cropped_affine,
                target / f"{subject}_{modality}.nii.gz",
            )
        mask, _ = load_canonical(source / f"{subject}_mask.nii.gz")
        write((mask[box] > 0).astype(np.uint8), cropped_affine, target / f"{subject}_mask.nii.gz")
    shutil.copyfile(source / "LICENSE.txt", target / "LICENSE.txt")
    total = sum(p.stat().st_size for p in target.iterdir())
    print(f"wrote {target} ({total / 2**20:.2f} MiB in all)")
    return {
        "crop": [[s.start, s.stop] for s in box],
        "files": {
            p.name: {
                "bytes": p.stat().st_size,
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            }
            for p in sorted(target.iterdir())
        },
    }


def main():
    parser = benchmark_parser(__doc__)
    parser.add_argument("--target", type=Path, default=TARGET, help="Where to write the files.")
    args = parser.parse_args()
    source = data_folder(args, "mslub")
    if source is not None:
        write_json(args.json, build(source, args.target))


if __name__ == "__main__":
    main()
