"""Multi-band TIFFs and GeoTIFFs: their headers (:func:`tiff_info`), their samples (:func:`read_bands`), and the
:class:`Layout` a folder of them shares (:func:`folder_layout`)."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import resources
from ..errors import UserError

#: Sample types read (cast to float32 exactly: every value of these types is a float32).
DTYPES = ("uint8", "uint16", "int16", "float32")
#: The 13 bands of EuroSAT's ``allBands`` TIFFs and of TFDS's ``eurosat/all``, in their stored order.
EUROSAT_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
#: A multi-band image whose decoding (stored samples, a float32 copy and its resized float32 copy) would take
#: more bytes than this is refused before decoding: the RGB path's budget (8192 x 8192 pixels x 16 bytes).
MAX_DECODE_BYTES = 8192 * 8192 * 16
#: TIFF tag of GDAL's metadata (XML), which holds the band descriptions of a GeoTIFF.
GDAL_METADATA = 42112


@dataclass(frozen=True)
class TiffInfo:
    """A TIFF's first image, from its tags: ``bands`` samples per pixel, ``alpha`` (the last extra sample is
    alpha), ``shape`` ``(height, width)``, ``dtype`` (numpy name), ``names`` (GDAL band descriptions or None)."""

    bands: int
    alpha: bool
    shape: tuple
    dtype: str
    names: tuple | None = None

    @property
    def rgb(self) -> bool:
        """An 8-bit RGB or RGB-plus-alpha TIFF, which the RGB path (tensorflow-io) decodes exactly."""
        return self.dtype == "uint8" and (self.bands == 3 or (self.bands == 4 and self.alpha))

    def describe(self) -> str:
        kind = "" if self.dtype == "uint8" else f" ({self.dtype})"
        return f"has {self.bands} band{'s' if self.bands != 1 else ''}{kind}"


@dataclass(frozen=True)
class Layout:
    """What every image of a multi-band source has: ``count`` bands of ``dtype``, named ``names`` (or None)."""

    count: int
    dtype: str
    names: tuple | None = None

    def describe(self) -> str:
        named = f": {', '.join(self.names)}" if self.names else ""
        return f"{self.count} band{'s' if self.count != 1 else ''} of {self.dtype}{named}"


def _quiet_tifffile() -> None:
    # a damaged file, or a header that declares more strips than it holds, is reported in one line of ours
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)


def tiff_info(path: str | Path) -> TiffInfo:
    """The :class:`TiffInfo` of ``path`` from its tags (nothing is decoded); a sample type or compression this
    reader cannot decode is refused in one line naming the file."""
    import tifffile

    _quiet_tifffile()
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        extra = tuple(int(e) for e in np.atleast_1d(page.extrasamples)) if page.extrasamples is not None else ()
        bands = int(page.samplesperpixel)
        dtype = np.dtype(page.dtype).name if page.dtype is not None else f"{page.bitspersample}-bit"
        names = _band_names(page, bands)
        compression = page.compression
        shape = (int(page.imagelength), int(page.imagewidth))
    info = TiffInfo(bands, bool(extra) and extra[-1] in (1, 2), shape, dtype, names)
    if not info.rgb:
        if dtype not in DTYPES:
            raise UserError(f"image {path} has samples of {dtype}, which snn4vision does not read (it reads "
                            f"{', '.join(DTYPES)}): write a copy in one of those (e.g. gdal_translate -ot UInt16)")
        try:
            tifffile.TIFF.DECOMPRESSORS[compression]
        except KeyError:
            name = getattr(compression, "name", str(compression))
            raise UserError(f"image {path} is {name}-compressed, which needs the imagecodecs package: install it "
                            "(pip install imagecodecs), or write a copy without it (e.g. gdal_translate -co "
                            "COMPRESS=DEFLATE in.tif out.tif)") from None
    return info


def _band_names(page, bands: int) -> tuple | None:
    """GDAL's band descriptions (``<Item name="DESCRIPTION" sample="i" role="description">``), when every band
    has one."""
    tag = page.tags.get(GDAL_METADATA)
    if tag is None:
        return None
    text = tag.value if isinstance(tag.value, str) else bytes(tag.value).decode("utf-8", "replace")
    names = {}
    for attributes, value in re.findall(r"<Item([^>]*)>([^<]*)</Item>", text):
        sample = re.search(r'sample="(\d+)"', attributes)
        if sample and re.search(r'role="description"', attributes):
            names[int(sample.group(1))] = value.strip()
    found = tuple(names.get(i, "") for i in range(bands))
    return found if all(found) and len(set(found)) == bands else None


def read_tiff(path: str | Path) -> np.ndarray:
    """Every band of a TIFF's first image, ``(height, width, bands)`` in its stored sample type, pixel-exact
    (pixel- or band-interleaved alike)."""
    return _read(path)[0]


def _read(path) -> tuple:
    """``(array (h, w, bands), dtype name)`` of the first image, the file opened once."""
    import tifffile

    _quiet_tifffile()
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        array, axes = page.asarray(), page.axes
    if axes == "YX":
        array = array[..., None]
    elif axes == "SYX":  # band-interleaved (planar), as rasterio writes by default
        array = np.moveaxis(array, 0, -1)
    elif axes != "YXS":
        raise UserError(f"image {path} stores its pixels as {axes} (not one image of bands): write each image as "
                        "a single-page TIFF of height x width x bands")
    return array, array.dtype.name


def read_bands(path: str | Path, layout: Layout, indices=None) -> np.ndarray:
    """The bands ``indices`` (0-based; all if None) of the TIFF ``path`` as float32 ``(h, w, len(indices))``.

    Refuses in one line naming the file: an unreadable file, other bands than ``layout``'s, NaN or infinite
    samples.
    """
    path = Path(path)
    try:
        array, dtype = _read(path)
    except UserError:
        raise
    except KeyError:  # a compression tifffile cannot decode: tiff_info says which, and the fix
        tiff_info(path)
        raise
    except (OSError, ValueError, IndexError, RuntimeError) as exc:  # tifffile: TiffFileError (a ValueError)
        detail = str(exc).replace(str(path), "").strip(" :'\"") or type(exc).__name__
        raise UserError(f"cannot read image {path} (not a readable TIFF: {detail[:120]}): replace or remove "
                        "the file") from None
    if array.shape[-1] != layout.count or dtype != layout.dtype:
        raise UserError(f"image {path} has {Layout(array.shape[-1], dtype).describe()}, but the run's images have "
                        f"{layout.describe()}: give images with the same bands")
    # copy=False: a float32 image read whole is already a fresh array, and copying it cost about a tenth of
    # its decode time (benchmarks/multispectral_decode.py)
    selected = (array if indices is None else array[..., list(indices)]).astype(np.float32, copy=False)
    if dtype.startswith("float") and not np.isfinite(selected).all():  # integers are always finite
        bad = int(np.count_nonzero(~np.isfinite(selected)))
        raise UserError(f"image {path} has {bad} NaN or infinite sample(s) (no-data pixels?): fill them with a "
                        "value (e.g. gdal_calc or numpy.nan_to_num) or remove the file")
    return selected


def check_decode_size(path, info: TiffInfo) -> str | None:
    """Why ``path`` is too large to decode (a sentence), or None."""
    height, width = info.shape
    needed = height * width * info.bands * (np.dtype(info.dtype).itemsize + 8)
    if needed <= MAX_DECODE_BYTES:
        return None
    return (f"{path} is {width}x{height} pixels of {info.bands} bands (decoding it takes about "
            f"{resources.size_text(needed)} of memory; at most {resources.size_text(MAX_DECODE_BYTES)} are "
            "decoded): downsample it or cut it into tiles (e.g. gdal_retile.py or gdal_translate -srcwin)")


def folder_layout(headers: list, root) -> Layout | None:
    """The :class:`Layout` of a folder's images, from ``[(path, info or None)]`` (None: not a TIFF, read as
    RGB); None when every image is RGB (the RGB path, unchanged). Images whose bands differ from the
    folder's majority are refused in one line naming the first."""
    def key(info):
        return ("rgb",) if info is None or info.rgb else (info.bands, info.dtype, info.names)

    if all(key(info) == ("rgb",) for _, info in headers):
        return None
    counts = {}
    for _, info in headers:
        counts[key(info)] = counts.get(key(info), 0) + 1
    # the majority is the norm (RGB on a tie: a stray multi-band TIFF among photos is named, as before)
    norm = max(counts, key=lambda k: (counts[k], k == ("rgb",)))
    odd = [(path, info) for path, info in headers if key(info) != norm]
    if odd:
        path, info = odd[0]
        named = "" if info is None or Path(path).suffix.lower() in (".tif", ".tiff") else \
            f" (a TIFF named {Path(path).suffix})"
        if norm == ("rgb",):
            raise UserError(
                f"{len(odd)} TIFF(s) are not RGB: {path} {info.describe()}{named} (the other images of {root} are "
                "RGB, and every image of a dataset needs the same bands): write an RGB copy of the bands you want "
                "(e.g. gdal_translate -b 1 -b 2 -b 3 in.tif out.tif), or make every image of the folder multi-band")
        example = next(p for p, i in headers if key(i) == norm)
        what = "3 bands (RGB)" if key(info) == ("rgb",) else info.describe().removeprefix("has ")
        if key(info) != ("rgb",) and (info.bands, info.dtype) == norm[:2]:
            what = f"bands named {', '.join(info.names or ('(none)',))}"
        layout = Layout(norm[0], norm[1], norm[2])
        raise UserError(f"{len(odd)} image(s) of {root} have other bands than the rest: {path} has {what}{named}, "
                        f"where {example} and {counts[norm] - 1} other(s) have {layout.describe()}: every image "
                        "of a dataset needs the same bands in the same order; replace or remove it")
    return Layout(norm[0], norm[1], norm[2])


