"""I/O benchmark: medcl's loader against raw pydicom / nibabel, and a cached against an uncached epoch.

    python benchmarks/io.py            # full sizes (about a minute on 2 cores)
    python benchmarks/io.py --quick    # small sizes, a smoke run

Every figure is measured in this run on synthetic data written to a temporary directory: a CT series of 512 x 512
int16 slices (RescaleIntercept -1024), a compressed NIfTI CT volume, and NIfTI volumes through the 3-D training
pipeline (load, RAS, resample, intensity window, pad; random crop and flips) cached with
``medcl.data.cache.persistent_dataset``. Times are the median of repeated passes; peak memory is the largest
Python/numpy heap allocation seen by ``tracemalloc`` during one pass (torch's allocator is not traced). "raw" ends
where medcl ends, in a float32 tensor of the same values (modality LUT applied), with no metadata.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from pydicom.pixels import apply_modality_lut

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medcl.data.cache import persistent_dataset
from medcl.data.image_io import load_image
from medcl.data.synthetic.dicom_writer import write_dicom_series
from medcl.data.transforms import volume_transforms


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def peak_bytes(function: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def compare(name: str, medcl: Callable[[], object], raw: Callable[[], object], repeats: int) -> dict[str, float]:
    # Interleaved passes, so that load from other processes on a shared machine hits both alike; the best pass
    # (as timeit does) is the least disturbed estimate of each, the median is reported beside it.
    medcl(), raw()  # warm-up: imports, decoder plugins, file cache
    medcl_times, raw_times = [], []
    for _ in range(repeats):
        raw_times.append(timed(raw))
        medcl_times.append(timed(medcl))
    result = {
        "medcl_s": min(medcl_times),
        "raw_s": min(raw_times),
        "medcl_median_s": statistics.median(medcl_times),
        "raw_median_s": statistics.median(raw_times),
        "medcl_peak_mb": peak_bytes(medcl) / 2**20,
        "raw_peak_mb": peak_bytes(raw) / 2**20,
    }
    result["time_ratio"] = result["medcl_s"] / result["raw_s"]
    result["memory_ratio"] = result["medcl_peak_mb"] / result["raw_peak_mb"]
    print(
        f"{name:<28} medcl {result['medcl_s'] * 1e3:8.2f} ms  raw {result['raw_s'] * 1e3:8.2f} ms  "
        f"time x{result['time_ratio']:.3f} (overhead {100 * (result['time_ratio'] - 1):+.1f}%; medians "
        f"x{result['medcl_median_s'] / result['raw_median_s']:.3f})  "
        f"peak {result['medcl_peak_mb']:.1f} vs {result['raw_peak_mb']:.1f} MB (x{result['memory_ratio']:.2f})"
    )
    return result


def bench_dicom(root: Path, n_slices: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    volume = rng.integers(-1024, 2000, size=(512, 512, n_slices)).astype(np.float32)
    files = write_dicom_series(volume, np.diag([0.7, 0.7, 1.25, 1.0]), root / "ct")

    def raw() -> None:  # the same result by hand: a float32 tensor of modality values
        for file in files:
            ds = pydicom.dcmread(file)
            torch.from_numpy(apply_modality_lut(ds.pixel_array, ds).astype(np.float32))

    def medcl() -> None:
        for file in files:
            load_image(file)

    return compare(f"DICOM {n_slices} x 512^2 slices", medcl, raw, repeats)


def bench_dicom_series(root: Path, repeats: int) -> dict[str, float]:
    directory = root / "ct"
    files = sorted(directory.iterdir())

    def raw() -> None:  # what a careful user writes by hand: read, sort by position along the normal, stack
        datasets = [pydicom.dcmread(f) for f in files]
        normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
        datasets.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))
        torch.from_numpy(np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in datasets], -1).astype(np.float32))

    return compare("DICOM series directory", lambda: load_image(directory), raw, repeats)


def bench_nifti(root: Path, shape: tuple[int, int, int], repeats: int) -> dict[str, float]:
    data = np.random.default_rng(1).integers(-1024, 2000, size=shape).astype(np.int16)
    path = root / "ct.nii.gz"
    nifti = nib.Nifti1Image(data, np.diag([0.8, 0.8, 1.5, 1.0]))
    nifti.header.set_slope_inter(1.0, 0.0)
    nib.save(nifti, path)
    return compare(
        f"NIfTI {'x'.join(map(str, shape))} .nii.gz",
        lambda: load_image(path),
        lambda: torch.from_numpy(nib.load(path).get_fdata(dtype=np.float32)),
        repeats,
    )


def bench_epochs(root: Path, n_volumes: int, shape: tuple[int, int, int]) -> dict[str, float]:
    rng = np.random.default_rng(2)
    items = []
    for index in range(n_volumes):
        volume = rng.integers(-1024, 1500, size=shape).astype(np.int16)
        nib.save(nib.Nifti1Image(volume, np.diag([-0.8, -0.8, 1.0, 1.0])), root / f"vol{index}.nii.gz")
        items.append({"image": str(root / f"vol{index}.nii.gz")})
    pipeline = volume_transforms(pixdim=(1.5, 1.5, 2.0), roi_size=(64, 64, 32))
    dataset = persistent_dataset(items, pipeline, root / "cache")

    def epoch() -> None:
        for index in range(len(dataset)):
            dataset[index]

    tracemalloc.start()
    start = time.perf_counter()
    epoch()
    first = time.perf_counter() - start
    first_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.reset_peak()
    start = time.perf_counter()
    epoch()
    second = time.perf_counter() - start
    second_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    result = {"uncached_s": first, "cached_s": second, "speedup": first / second,
              "uncached_peak_mb": first_peak, "cached_peak_mb": second_peak}  # fmt: skip
    print(
        f"{'epoch of ' + str(n_volumes) + ' volumes':<28} uncached {first:.2f} s  cached {second:.3f} s  "
        f"speed-up x{result['speedup']:.1f}  peak {first_peak:.1f} vs {second_peak:.1f} MB"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes per comparison")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    repeats = args.repeats or (5 if args.quick else 15)
    with tempfile.TemporaryDirectory(prefix="medcl-io-bench-") as tmp:
        root = Path(tmp)
        results = {
            "dicom_files": bench_dicom(root, 8 if args.quick else 40, repeats),
            "dicom_series": bench_dicom_series(root, repeats),
            "nifti": bench_nifti(root, (128, 128, 64) if args.quick else (256, 256, 160), repeats),
            "epochs": bench_epochs(root, 3 if args.quick else 8, (96, 96, 48) if args.quick else (192, 192, 96)),
        }
    overhead = results["dicom_files"]["time_ratio"] - 1
    speedup = results["epochs"]["speedup"]
    print(f"\nDICOM load overhead over raw pydicom: {100 * overhead:+.1f}% (target <= 15%): "
          f"{'PASS' if overhead <= 0.15 else 'FAIL'}")  # fmt: skip
    print(f"cached vs uncached epoch: x{speedup:.1f} (target >= 10): {'PASS' if speedup >= 10 else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
