"""Image sources: a folder laid out as ``root/<class>/<image>`` (:func:`scan_folder`, its images checked before
training) or a TensorFlow Datasets dataset (:func:`open_tfds`), as an :class:`ImageSource`."""
from __future__ import annotations

import errno
import os
import re
import socket
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import bands, resources
from ..errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
TIFF_EXTENSIONS = (".tif", ".tiff")
#: First bytes of a TIFF (little- and big-endian); the decoder (decode_image) goes by these, not by the name.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
#: Images with more pixels are refused before decoding: decoding and resizing one takes about 16 bytes per pixel
#: (measured: 36 Mpx took 561 MiB), and tf.data decodes several at once.
MAX_IMAGE_PIXELS = 8192 * 8192
#: Images with a side shorter than this many pixels are named in a warning (they are upsampled a lot).
MIN_IMAGE_SIDE = 32
#: Dataset names understood by ``--dataset`` and their TensorFlow Datasets names.
TFDS_NAMES = {"eurosat": "eurosat/rgb", "eurosat_all": "eurosat/all", "uc_merced": "uc_merced"}
#: Host each TFDS dataset downloads from (checked before a download starts).
_DOWNLOAD_HOSTS = {"eurosat": "madm.dfki.de", "eurosat_all": "madm.dfki.de", "uc_merced": "weegee.vision.ucmerced.edu"}
#: TFDS datasets of multi-band images: their band layout (the EuroSAT TIFFs' 13 Sentinel-2 bands, float32).
TFDS_LAYOUTS = {"eurosat_all": bands.Layout(13, "float32", bands.EUROSAT_BANDS)}



# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------
@dataclass
class ImageSource:
    """A labelled image collection.

    ``items`` identify the images (paths relative to ``root`` for a folder,
    ``"<index>"`` for a TFDS dataset); ``labels[i]`` is the class index of
    ``items[i]`` into ``classes``.
    """

    kind: str  # "folder" or "tfds"
    name: str  # folder path or dataset name
    classes: list[str]
    items: list[str]
    labels: np.ndarray
    root: Path | None = None
    data_dir: str | None = None
    _tfds_dataset: object = field(default=None, repr=False)
    #: multi-band sources: every image's bands (bands.Layout); None for RGB images
    layout: object = None
    #: set by bands.prepare for a run: the selected bands and their training statistics (bands.Plan)
    plan: object = field(default=None, repr=False)

    def describe(self) -> dict:
        described = {"kind": self.kind, "name": self.name, "root": str(self.root) if self.root else None,
                     "data_dir": self.data_dir, "num_images": len(self.items), "num_classes": len(self.classes)}
        if self.layout is not None:  # RGB sources describe themselves as before
            described["bands"] = self.layout.describe()
        return described


def _looks_like_image_folder(path: Path) -> bool:
    return path.is_dir() and any(
        sub.is_dir() and any(f.suffix.lower() in IMAGE_EXTENSIONS for f in sub.iterdir()) for sub in path.iterdir()
    )


def open_source(dataset: str, data_dir: str | None = None) -> ImageSource:
    """Resolve ``--dataset`` / ``--data-dir`` into an :class:`ImageSource`.

    ``dataset`` is ``eurosat``, ``uc_merced`` or the path of an image folder.
    For a TFDS name, ``data_dir`` is either a folder of images laid out as
    ``<class>/<image>`` (a local copy, used directly) or TFDS's data folder.
    """
    if dataset in TFDS_NAMES:
        if data_dir and _looks_like_image_folder(Path(data_dir)):
            source = scan_folder(data_dir)
            known = TFDS_LAYOUTS.get(dataset)
            if known and source.layout is not None and source.layout.names is None \
                    and source.layout.count == known.count:  # EuroSAT's allBands TIFFs do not name their bands
                source.layout = bands.Layout(source.layout.count, source.layout.dtype, known.names)
            return source
        return open_tfds(dataset, data_dir)
    path = Path(dataset)
    if path.exists() or "/" in dataset or dataset.startswith("."):
        return scan_folder(path)
    raise UserError(
        f"unknown dataset {dataset!r}: use one of {', '.join(TFDS_NAMES)} "
        "or the path of an image folder laid out as <folder>/<class>/<image>"
    )


def scan_folder(root: str | Path) -> ImageSource:
    """List a folder laid out as ``root/<class>/<image>``; classes sorted by name."""
    root = Path(root)
    _refuse_link_loops([root])
    if not root.exists():
        raise UserError(f"image folder {root} does not exist: pass the folder that holds one sub-folder per class")
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: pass the folder that holds one sub-folder per class")
    class_dirs = _class_folders(root)
    classes, items, labels, dangling = [], [], [], []
    for label, class_dir in enumerate(class_dirs):
        candidates = [f for f in sorted(class_dir.iterdir())
                      if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")]
        _refuse_link_loops(candidates)
        dangling += [f for f in candidates if f.is_symlink() and not f.exists()]
        files = [f for f in candidates if f.is_file()]
        if not files:
            raise UserError(
                f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}): add images or remove it"
            )
        classes.append(class_dir.name)
        items.extend(str(f.relative_to(root)) for f in files)
        labels.extend([label] * len(files))
    if dangling:
        warn(f"{len(dangling)} image link(s) in {root} point nowhere and are left out ({_first(dangling)}): "
             "restore their targets or remove the links")
    layout = check_images([root / item for item in items], root)
    return ImageSource("folder", str(root), classes, items, np.asarray(labels, np.int64), root=root, layout=layout)


def _class_folders(root: Path) -> list:
    """The class folders of ``root``, sorted; hidden folders (``.git``, ``.ipynb_checkpoints``) are left out, in
    a warning, since a class of that name is almost always a tool's folder."""
    entries = sorted(root.iterdir())
    _refuse_link_loops(entries)
    hidden = [p.name for p in entries if p.name.startswith(".") and p.is_dir()]
    if hidden:
        warn(f"{len(hidden)} hidden folder(s) in {root} are not used as classes ({_first(hidden)}): rename any "
             "that is a class so that its name does not start with a dot")
    class_dirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    if not class_dirs:
        raise UserError(f"image folder {root} has no class sub-folders: lay it out as {root}/<class>/<image>")
    return class_dirs


def _is_link_loop(path: Path) -> bool:
    """True for a symbolic link that leads back to itself (ELOOP), which would otherwise pass as a missing file."""
    if not path.is_symlink():
        return False
    try:
        path.stat()
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _refuse_link_loops(paths: list) -> None:
    loops = [p for p in paths if _is_link_loop(p)]
    if loops:
        raise UserError(f"{len(loops)} symbolic link loop(s) ({_first(loops)}): each leads back to itself and is "
                        "neither a folder nor an image: remove it or point it at a real folder or image")


def warn(message: str) -> None:
    """One warning line on stderr (the data are used; the user should know)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _first(paths: list, count: int = 3) -> str:
    shown = ", ".join(str(p) for p in paths[:count])
    return shown + (f" and {len(paths) - count} more" if len(paths) > count else "")


def tiff_layout(path: str | Path) -> tuple[int, bool, tuple]:
    """``(bands, alpha, shape)`` of a TIFF's first image, from its tags (nothing is decoded).

    ``bands`` counts every sample per pixel; ``alpha`` says whether the last
    extra sample is an alpha channel; ``shape`` is ``(height, width)``.
    """
    import logging

    import tifffile

    logging.getLogger("tifffile").setLevel(logging.ERROR)  # a damaged file is reported by the decoder, in one line
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        extra = tuple(int(e) for e in np.atleast_1d(page.extrasamples)) if page.extrasamples is not None else ()
        return int(page.samplesperpixel), bool(extra) and extra[-1] in (1, 2), (int(page.imagelength),
                                                                               int(page.imagewidth))


def is_tiff(path: Path) -> bool:
    """Whether ``path`` holds a TIFF, told by its first bytes as the decoder tells it (a TIFF named .png is one)."""
    with open(path, "rb") as handle:
        return handle.read(4) in TIFF_MAGIC


def image_header(path: Path) -> tuple[tuple, "bands.TiffInfo | None"]:
    """``((height, width), the TIFF's bands or None)``, read from the header (nothing is decoded).

    A TIFF is told by its first bytes, whatever its name says; other images are read as RGB (None). Raises a
    UserError naming the file when no decoder would recognise it or it declares more pixels than PIL accepts.
    """
    from PIL import UnidentifiedImageError

    tiff = path.suffix.lower() in TIFF_EXTENSIONS
    try:
        if is_tiff(path):
            tiff = True
            info = bands.tiff_info(path)
            return info.shape, info
        return _pil_shape(path), None
    except (UnidentifiedImageError, OSError, ValueError, IndexError) as exc:  # tifffile: TiffFileError (a ValueError)
        detail = str(exc).replace(str(path), "").strip(" :'\"") or type(exc).__name__
        if tiff:
            detail = f"not a readable TIFF: {detail}"
        raise UserError(f"cannot read image {path} ({detail[:120]}): replace or remove the file") from None


def _pil_shape(path: Path) -> tuple:
    """``(height, width)`` from PIL's header; its decompression-bomb refusal (a tiny file that declares billions
    of pixels) becomes one line naming the file, its warning below that is left to :func:`check_images`."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                return image.size[::-1]
        except Image.DecompressionBombError as exc:
            declared = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(declared.group(1)):,} pixels" if declared else "billions of pixels"
            raise UserError(f"image {path} declares {size} (a damaged file or a decompression bomb; at most "
                            f"{MAX_IMAGE_PIXELS:,} are decoded): replace or remove the file") from None


def check_images(paths: list, root=None) -> "bands.Layout | None":
    """The folder's band layout (None: RGB images, or RGB plus alpha) after refusing images whose bands differ
    from the rest (:func:`bands.folder_layout`), images too large to decode and files no decoder recognises;
    warn once about images smaller than MIN_IMAGE_SIDE.

    A multispectral TIFF among RGB images would otherwise be decoded as RGBA
    of its first band or first three bands: bands would be dropped or
    duplicated without a word. A huge image would be decoded whole before it
    is resized, several at once: the out-of-memory killer ends the run
    without a word.
    """
    headers = [(path, *image_header(path)) for path in paths]
    _refuse_huge([(path, shape) for path, shape, _ in headers if shape[0] * shape[1] > MAX_IMAGE_PIXELS])
    too_large = [why for why in (bands.check_decode_size(path, info) for path, _, info in headers
                                 if info is not None and not info.rgb) if why]
    if too_large:  # multi-band: the bound is on bytes, since every band is decoded
        raise UserError(f"{len(too_large)} image(s) are too large to decode: {too_large[0]}")
    layout = bands.folder_layout([(path, info) for path, _, info in headers], root or _common_folder(paths))
    small = [(path, min(shape)) for path, shape, _ in headers if min(shape) < MIN_IMAGE_SIDE]
    if small:
        warn(f"{len(small)} image(s) have a side shorter than {MIN_IMAGE_SIDE} pixels and will be upsampled "
             f"({_first([f'{p} ({s} px)' for p, s in small])}): check that they belong in the dataset")
    return layout


def _common_folder(paths: list) -> str:
    return os.path.commonpath([str(Path(p).parent) for p in paths]) if paths else "."


def _refuse_huge(huge: list) -> None:
    if huge:
        path, (height, width) = huge[0]
        raise UserError(
            f"{len(huge)} image(s) are too large to decode: {path} is {width}x{height} pixels (decoding it takes "
            f"about {resources.size_text(16 * width * height)} of memory; at most {MAX_IMAGE_PIXELS:,} pixels are "
            "decoded): downsample them or cut them into tiles (e.g. gdal_translate -outsize 25% 25% in.tif out.tif)")


def check_cache_memory(num_images: int, image_size: int) -> None:
    """Refuse a dataset whose decoded images, cached in memory at ``image_size`` (:func:`decoded_dataset`), would
    not fit."""
    resources.check_memory(num_images * image_size * image_size * 3,
                           f"keeping the {num_images} images decoded at {image_size}x{image_size} in memory",
                           f"lower --image-size (now {image_size}) or use fewer images")


def _can_reach(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 80), timeout=timeout):
            return True
    except OSError:
        return False


def open_tfds(name: str, data_dir: str | None = None) -> ImageSource:
    """Open a TensorFlow Datasets dataset, downloading it only when online.

    Offline, a dataset that is not prepared on disk fails at once with a
    UserError that says what to pass instead.
    """
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # "Variant folder ... has no dataset_info.json": said below
    try:
        builder = tfds.builder(TFDS_NAMES[name], data_dir=data_dir, try_gcs=False)
        prepared = builder.is_prepared()
    finally:
        absl_logging.set_verbosity(verbosity)
    if not prepared:
        host = _DOWNLOAD_HOSTS[name]
        if not _can_reach(host):
            raise UserError(
                f"dataset {name} is not prepared in {builder.data_dir} and cannot be downloaded ({host} unreachable): "
                f"pass --data-dir with a folder that holds it (a TFDS data folder, or a copy of the images "
                f"laid out as <class>/<image>), or run once with internet access"
            )
        builder.download_and_prepare()
    info = builder.info
    label_feature = info.features["label"]
    dataset = builder.as_dataset(split="train", shuffle_files=False)
    labels = np.fromiter((int(x) for x in dataset.map(lambda e: e["label"]).as_numpy_iterator()), np.int64)
    return ImageSource(
        "tfds", name, list(label_feature.names), [str(i) for i in range(len(labels))], labels,
        data_dir=data_dir, _tfds_dataset=dataset, layout=TFDS_LAYOUTS.get(name),
    )


