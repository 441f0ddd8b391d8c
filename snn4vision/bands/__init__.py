"""Multispectral inputs: multi-band TIFFs/GeoTIFFs (:mod:`~snn4vision.bands.tiff`), ``--bands`` and per-band
normalisation (:mod:`~snn4vision.bands.plan`); every name is re-exported here.

A folder whose TIFFs are not 8-bit RGB (13 Sentinel-2 bands, RGB plus
near-infrared, 16-bit or float reflectances), or TFDS's ``eurosat/all``, is a
*multi-band source*: its :class:`Layout` says how many bands each image has,
their sample type and, where the source names them, their names (GDAL's band
descriptions, or the Sentinel-2 names of EuroSAT).

A run on such a source keeps a :class:`Plan` in ``config.json``
(``band_stats``): the bands ``--bands`` selected, in order, and the mean and
standard deviation of each over every pixel of the training split (never val
or test). Every stage maps band ``b`` to ``0.5 + (x - mean_b) / (6 std_b)``,
clipped to ``[0, 1]``: three standard deviations either side of the mean fill
the ``[0, 1]`` range that the models, the augmentation, the edge filters and
the SNN conversion expect of RGB images. Decoded images are cached as float16
(about 1/2000 of that range per step, far below a band's spread).
"""
from .tiff import (DTYPES, EUROSAT_BANDS, GDAL_METADATA, MAX_DECODE_BYTES, Layout, TiffInfo, check_decode_size,
                   folder_layout, read_bands, read_tiff, tiff_info)
from .plan import (SIGMAS, TFDS_IMAGE_KEY, Plan, RunningStats, channels_of, decoded_dataset, load_file,
                   parse_selection, plan_of, prepare, raw_images, resolve)

__all__ = [
    "DTYPES", "EUROSAT_BANDS", "GDAL_METADATA", "MAX_DECODE_BYTES", "SIGMAS", "TFDS_IMAGE_KEY", "Layout",
    "Plan", "RunningStats", "TiffInfo", "channels_of", "check_decode_size", "decoded_dataset", "folder_layout",
    "load_file", "parse_selection", "plan_of", "prepare", "raw_images", "read_bands", "read_tiff", "resolve",
    "tiff_info",
]
