"""Decode time per pixel: the multi-band path (tifffile, every band, issue 31) against the RGB TIFF path
(tensorflow-io's decode_tiff) on the same machine, in the same run, as a ratio.

The RGB path decodes UC Merced's 21 original TIFFs (256 x 256 x 3, uint8) and 64 x 64 cuts of them; the
multi-band path decodes 13-band GeoTIFFs written here (uint16 and float32, 64 x 64 as EuroSAT and 256 x 256 as
UC Merced), each against the RGB path at its size. Each file
is decoded ``--repeats`` times from memory-cached bytes (the files are read once before timing) and the
median per file is kept. "Per pixel" counts image pixels (height x width), whatever the number of bands; the
per-sample figure (pixels x bands) is shown too. Not a timed assertion: a measurement to read.

Usage: ``.venv/bin/python benchmarks/multispectral_decode.py [--repeats 30] [--output FILE]``; writes
``benchmarks/results/multispectral_decode.md`` by default.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
UCMERCED_TIFF = ROOT.parent / "shared" / "data" / "ucmerced_tiff"


def _median_seconds(function, repeats: int) -> float:
    function()  # warm-up (graph tracing, first allocations)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def rgb_path(paths: list, repeats: int) -> tuple:
    """Seconds per pixel of today's RGB TIFF decoding (data.decode_image: tensorflow-io, alpha dropped)."""
    import tensorflow as tf

    from snn4vision import data

    decode = tf.function(data.decode_image)
    per_pixel = []
    for path in paths:
        contents = tf.constant(Path(path).read_bytes())
        image = decode(contents).numpy()
        seconds = _median_seconds(lambda: decode(contents).numpy(), repeats)
        per_pixel.append(seconds / (image.shape[0] * image.shape[1]))
    return statistics.median(per_pixel), 3


def multiband_path(paths: list, repeats: int) -> tuple:
    """Seconds per pixel of the multi-band decoding (bands.read_bands: tifffile, every band as float32)."""
    from snn4vision import bands

    per_pixel, count = [], None
    for path in paths:
        info = bands.tiff_info(path)
        layout = bands.Layout(info.bands, info.dtype)
        Path(path).read_bytes()  # in the page cache, as the RGB files are
        seconds = _median_seconds(lambda: bands.read_bands(path, layout), repeats)
        per_pixel.append(seconds / (info.shape[0] * info.shape[1]))
        count = info.bands
    return statistics.median(per_pixel), count


def write_geotiffs(folder: Path, side: int, dtype, count: int = 8) -> list:
    import tifffile

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        array = rng.normal(2000, 300, (side, side, 13)).astype(dtype)
        path = folder / f"{np.dtype(dtype).name}_{side}_{i}.tif"
        tifffile.imwrite(path, array, photometric="minisblack", planarconfig="contig")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "multispectral_decode.md"))
    args = parser.parse_args()
    rgb_files = sorted(UCMERCED_TIFF.glob("*/*.tif"))
    if not rgb_files:
        raise SystemExit(f"no TIFFs under {UCMERCED_TIFF}: the RGB baseline needs ../shared/data")
    rgb, _ = rgb_path(rgb_files, args.repeats)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        import tifffile

        small = []  # UC Merced's TIFFs cut to EuroSAT's 64 x 64: the RGB baseline at that size
        for i, path in enumerate(rgb_files[:8]):
            small.append(Path(scratch) / f"rgb64_{i}.tif")
            tifffile.imwrite(small[-1], tifffile.imread(path)[:64, :64, :3], photometric="rgb")
        baselines = {64: rgb_path(small, args.repeats)[0], 256: rgb}
        for side in (64, 256):
            rows.append(("RGB TIFF, tensorflow-io (today's path)", f"{side} x {side} x 3 uint8", baselines[side], 3,
                         baselines[side]))
            for dtype in (np.uint16, np.float32):
                paths = write_geotiffs(Path(scratch), side, dtype)
                seconds, count = multiband_path(paths, args.repeats)
                rows.append(("13-band GeoTIFF, tifffile", f"{side} x {side} x 13 {np.dtype(dtype).name}", seconds,
                             count, baselines[side]))
    lines = ["# Decode time per pixel: multi-band GeoTIFFs against RGB TIFFs (issue 31)", "",
             f"`benchmarks/multispectral_decode.py --repeats {args.repeats}` on {time.strftime('%Y-%m-%d')}: median "
             "over files of the median of the repeats; the ratio is against the RGB path measured in the same run "
             "at the same image size (below 1: faster per pixel).", "",
             "| path | images | ns per pixel | ns per sample | ratio per pixel to RGB |", "|---|---|---|---|---|"]
    for name, shape, seconds, count, baseline in rows:
        lines.append(f"| {name} | {shape} | {seconds * 1e9:.1f} | {seconds * 1e9 / count:.2f} | "
                     f"{seconds / baseline:.2f} |")
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
