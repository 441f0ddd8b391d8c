"""Image data: sources, seeded stratified splits, decoding, augmentation.

A *source* is either a local folder laid out as ``root/<class>/<image>`` or a
TensorFlow Datasets dataset (``eurosat``, ``eurosat_all``, ``uc_merced``). Every source yields
``(image, label)`` pairs; images are decoded inside the ``tf.data`` graph
(TIFFs with tensorflow-io), resized to a square ``image_size`` and cached as
``uint8``. Batches hand the model ``float32`` images in ``[0, 1]`` of shape
``(batch, image_size, image_size, 3)``.

A folder of multi-band TIFFs (or ``eurosat_all``) is a multi-band source
(:mod:`snn4vision.bands`): its images keep every band and sample type, and
batches hand the model ``(batch, image_size, image_size, C)`` of the bands
``--bands`` selected, each normalised with the training split's statistics.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import bands, resources
from .errors import UserError
from .edges import EdgeFilter

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
SPLITS = ("train", "val", "test")
#: The largest --seed: tf.keras.utils.set_random_seed seeds NumPy's legacy generator, which takes 0 .. 2**32 - 1.
MAX_SEED = 2 ** 32 - 1


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


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------
def stratified_split(labels: Sequence[int], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict:
    """Split indices per class into train/val/test with the given fractions.

    Each class is shuffled with a generator seeded by ``seed`` and cut at
    ``round(n * cumulative fraction)``, so every split keeps the class
    proportions (up to one image per class) and the result depends only on
    ``labels``, ``fractions`` and ``seed``. Returns sorted index arrays.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise UserError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        cuts = np.round(np.cumsum(fractions)[:2] * len(members)).astype(int)
        for name, chunk in zip(SPLITS, np.split(members, cuts)):
            parts[name].append(chunk)
    return {name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()}


def stratified_folds(labels: Sequence[int], folds: int, fold: int, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                     seed: int = 0) -> dict:
    """Split indices for fold ``fold`` of a stratified ``folds``-fold cross-validation.

    Each class is shuffled with a generator seeded by ``seed`` (the same order for every fold) and cut into
    ``folds`` chunks of sizes that differ by at most one; chunk ``fold`` is the test split, so over
    ``fold = 0 .. folds - 1`` every image is tested exactly once. The other chunks are split into val and train
    in the proportion ``fractions[1] : fractions[0]`` (val first), the test share of ``fractions`` being
    replaced by ``1 / folds``. Returns sorted index arrays.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or not fractions[:2].sum() > 0:
        raise UserError(f"split fractions must be three non-negative numbers, got {list(fractions)}")
    if not (isinstance(folds, (int, np.integer)) and folds >= 2 and 0 <= fold < folds):
        raise UserError(f"--fold must be one of 0 .. {folds - 1} of --folds {folds} (at least 2 folds)")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val_share = fractions[1] / fractions[:2].sum()
    parts = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < folds:
            raise UserError(f"class {label} has {len(members)} image(s), fewer than --folds {folds}: use fewer "
                            "folds or more images per class")
        chunks = np.array_split(members[rng.permutation(len(members))], folds)
        rest = np.concatenate([c for i, c in enumerate(chunks) if i != fold])
        cut = int(round(val_share * len(rest)))
        parts["test"].append(chunks[fold])
        parts["val"].append(rest[:cut])
        parts["train"].append(rest[cut:])
    return {name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()}


def split_manifest(source: ImageSource, fractions: Sequence[float], seed: int, folds: int = 0,
                   fold: int = 0) -> dict:
    """The exact files (and labels) of each split, as saved to ``split.json``; with ``folds``, those of
    cross-validation fold ``fold`` (:func:`stratified_folds`)."""
    if folds:
        indices = stratified_folds(source.labels, folds, fold, fractions, seed)
    else:
        indices = stratified_split(source.labels, fractions, seed)
    manifest = {"source": source.describe(), "fractions": list(fractions), "seed": seed}
    if folds:
        manifest.update(folds=folds, fold=fold)
    for name in SPLITS:
        manifest[name] = [[source.items[i], int(source.labels[i])] for i in indices[name]]
    empty = [name for name in SPLITS if not manifest[name]]
    if empty:  # every split is used: val picks the best epoch, test scores the ANN and its SNN
        smallest = int(np.unique(source.labels, return_counts=True)[1].min()) if len(source.labels) else 0
        raise UserError(f"the {' and '.join(empty)} split would be empty (--split {' '.join(map(str, fractions))} of "
                        f"{smallest} image(s) in the smallest class of {source.name}): use more images per class "
                        "or larger fractions for it")
    return manifest


def manifest_indices(source: ImageSource, manifest: dict, split: str) -> np.ndarray:
    """Map a saved split back onto ``source``; fail clearly if files are gone."""
    position = {item: i for i, item in enumerate(source.items)}
    missing = [item for item, _ in manifest[split] if item not in position]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) of the saved {split} split are not in {source.name} "
            f"(first: {missing[0]}): point --data-dir at the same data the run was trained on"
        )
    return np.asarray([position[item] for item, _ in manifest[split]], np.int64)


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------
def decode_image(data):
    """Decode JPEG/PNG/BMP/GIF or TIFF bytes into ``uint8 (h, w, 3)``.

    TIFFs are recognised by their magic bytes and decoded with
    tensorflow-io, which returns RGBA with the colours multiplied by alpha
    (transparent pixels become black); alpha is then dropped. Only RGB and
    RGB-plus-alpha TIFFs get here (:func:`check_images` refuses others).
    """
    import tensorflow as tf

    head = tf.strings.substr(data, 0, 4)
    is_tiff = tf.logical_or(tf.equal(head, b"II*\x00"), tf.equal(head, b"MM\x00*"))

    def tiff():
        import tensorflow_io as tfio

        return tfio.experimental.image.decode_tiff(data)[..., :3]

    def other():
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    image = tf.cond(is_tiff, tiff, other)
    image.set_shape([None, None, 3])
    return image


def resize_uint8(image, image_size: int):
    """Resize to ``(image_size, image_size)`` (bilinear, antialiased) as uint8."""
    import tensorflow as tf

    resized = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def load_image_file(path: str | Path, image_size: int | None = None) -> np.ndarray:
    """Read one image file as ``uint8 (h, w, 3)``, resized if ``image_size``.

    Raises a UserError naming the file if it cannot be read or decoded.
    """
    import tensorflow as tf

    if not Path(path).is_file():
        raise UserError(f"image file {path} does not exist")
    layout = check_images([Path(path)])
    if layout is not None:
        raise UserError(f"image {path} has {layout.describe()}, where an RGB image was expected (this run was "
                        "trained on RGB images): give an RGB image, or train a run on the multi-band images")
    try:
        with _c_libraries_quiet():
            image = decode_image(tf.io.read_file(str(path)))
            if image_size:
                image = resize_uint8(image, image_size)
            return image.numpy()
    except (tf.errors.OpError, ValueError) as exc:
        raise UserError(f"cannot read image {path} ({tf_error_text(exc)}): replace or remove the file") from None


@contextlib.contextmanager
def _c_libraries_quiet() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: libjpeg and libtiff print their own lines before TensorFlow raises,
    and the error raised is the one line the user should see."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tf_error_text(exc: Exception, limit: int = 160) -> str:
    """The first line of a TensorFlow error without its ``{{function_node ...}}`` and ``[Op:...]`` decorations."""
    text = str(getattr(exc, "message", None) or exc).strip()
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text.splitlines()[0] if text else "")
    text = re.sub(r"\s*\[\[\{\{node [^]]*\]\]|\s*\[Op:[^\]]*\]?|\s*name:.*$", "", text).strip()
    return (text or type(exc).__name__)[:limit]


def decoded_dataset(source: ImageSource, indices: np.ndarray, image_size: int):
    """``tf.data`` of ``(uint8 image (s, s, 3), int64 label)`` for ``indices``, cached."""
    import tensorflow as tf

    if source.kind == "events":  # an events.EventSource: float16 frames binned as the run says
        return source.decoded(indices, image_size)
    if source.layout is not None:  # multi-band: float16 images of the selected, normalised bands
        return bands.decoded_dataset(source, indices, image_size)
    autotune = tf.data.AUTOTUNE
    labels = source.labels[indices]
    if source.kind == "folder":
        paths = [str(source.root / source.items[i]) for i in indices]
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        ds = ds.map(lambda p, y: (resize_uint8(decode_image(tf.io.read_file(p)), image_size), y),
                    num_parallel_calls=autotune, deterministic=True)
    else:
        wanted = tf.constant(np.asarray(indices, np.int64))
        ds = source._tfds_dataset.enumerate().filter(lambda i, e: tf.reduce_any(tf.equal(i, wanted)))
        ds = ds.map(lambda i, e: (resize_uint8(e["image"], image_size), e["label"]), num_parallel_calls=autotune)
    return ds.cache()


@contextlib.contextmanager
def explain_bad_images(source: ImageSource, indices: np.ndarray) -> Iterator[None]:
    """Turn a decoding failure deep inside ``tf.data`` into a UserError naming the file.

    TensorFlow's decode errors do not say which file failed; on such an error
    the files of ``indices`` are decoded one by one to find it.
    """
    import tensorflow as tf

    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnimplementedError) as exc:
        if source.kind == "folder":
            for i in indices:
                if source.layout is not None:
                    bands.read_bands(source.root / source.items[i], source.layout)
                else:
                    load_image_file(source.root / source.items[i])
            if "decode" not in str(exc).lower():  # every file decodes: the error was not about the images
                raise
        raise UserError(f"an image of {source.name} could not be decoded ({tf_error_text(exc)}): find it by "
                        "opening the images one by one, then replace or remove it") from None


# --------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Augmentation:
    """SNN4Space's training augmentation, applied per image with stateless ops.

    Input and output: ``float32 (h, w, c)`` in ``[0, 1]`` (hue and saturation only where c is 3); ``seed`` is an
    ``int64 (2,)`` tensor, so the result is a pure function of image and seed.
    Set a parameter to ``None`` (or ``False``) to switch that step off.
    """

    zoom: tuple | None = (0.95, 1.05)
    pad_crop: float | None = 0.0625  # pad by this fraction of the size, then crop back at random
    flips: bool = True
    rotations: bool = True  # multiples of 90 degrees
    brightness: float | None = 0.2
    contrast: tuple | None = (0.2, 1.8)
    hue: float | None = 0.1
    saturation: tuple | None = (0.9, 1.1)
    # event drops (tonic's DropPixel and DropEventByTime, at the run's resolution and frame granularity), after
    # the geometry: a fraction drawn from [0, drop_pixels) of the pixels loses its events in every frame and
    # both polarities; a window of up to drop_time of the frames (per-step frames only) loses all of its events
    drop_pixels: float | None = None
    drop_time: float | None = None

    def __call__(self, image, seed):
        import tensorflow as tf

        if image.shape.rank == 4:  # event frames (T, h, w, c): one draw for all T, so time in the channels
            steps, channels = image.shape[0], image.shape[-1]
            packed = tf.reshape(tf.transpose(image, [1, 2, 0, 3]), [tf.shape(image)[1], tf.shape(image)[2],
                                                                    steps * channels])
            moved = self._image(packed, seed, clip=False)  # frames are T times the accumulated scale: not clipped
            frames = tf.transpose(tf.reshape(moved, [tf.shape(moved)[0], tf.shape(moved)[1], steps, channels]),
                                  [2, 0, 1, 3])
            return self._drop(frames, seed)
        return self._drop(self._image(image, seed), seed)

    def _drop(self, x, seed):
        """The event drops of ``x``, ``(T, h, w, c)`` frames or an ``(h, w, c)`` accumulated frame."""
        import tensorflow as tf

        if not (self.drop_pixels or self.drop_time):
            return x
        # seeds of their own, so the geometric draws stay those of the policies without drops
        seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 1009), 4)
        if self.drop_pixels:
            fraction = tf.random.stateless_uniform([], seeds[0], 0.0, self.drop_pixels)
            kept = tf.random.stateless_uniform(tf.shape(x)[-3:-1], seeds[1]) >= fraction
            x = x * tf.cast(kept, x.dtype)[..., None]  # (h, w, 1): every frame and polarity of a pixel
        if self.drop_time and x.shape.rank == 4:
            steps = tf.shape(x)[0]
            length = tf.cast(tf.random.stateless_uniform([], seeds[2], 0.0, self.drop_time)
                             * tf.cast(steps, tf.float32), tf.int32)
            start = tf.random.stateless_uniform([], seeds[3], 0, steps - length + 1, dtype=tf.int32)
            t = tf.range(steps)
            x = x * tf.cast((t < start) | (t >= start + length), x.dtype)[:, None, None, None]
        return x

    def _image(self, image, seed, clip: bool = True):
        import tensorflow as tf

        size = tf.shape(image)[0]
        width = tf.shape(image)[1]
        channels = image.shape[-1] if image.shape[-1] is not None else 3  # 3 for RGB; the selected bands
        seeds = tf.random.experimental.stateless_split(seed, 9)
        if self.zoom:
            factor = tf.random.stateless_uniform([], seeds[0], self.zoom[0], self.zoom[1])
            new_h = tf.cast(tf.round(tf.cast(size, tf.float32) * factor), tf.int32)
            new_w = tf.cast(tf.round(tf.cast(width, tf.float32) * factor), tf.int32)
            image = tf.image.resize(image, [new_h, new_w])
            image = tf.image.resize_with_crop_or_pad(image, size, width)
        if self.pad_crop:
            pad = tf.maximum(1, tf.cast(tf.round(tf.cast(size, tf.float32) * self.pad_crop), tf.int32))
            image = tf.image.resize_with_crop_or_pad(image, size + pad, width + pad)
            image = tf.image.stateless_random_crop(image, [size, width, channels], seeds[1])
        if self.flips:
            image = tf.image.stateless_random_flip_left_right(image, seeds[2])
            image = tf.image.stateless_random_flip_up_down(image, seeds[3])
        if self.rotations:
            k = tf.random.stateless_uniform([], seeds[4], 0, 4, dtype=tf.int32)
            image = tf.image.rot90(image, k)
        if self.brightness:
            image = tf.image.stateless_random_brightness(image, self.brightness, seeds[5])
        if self.contrast:
            image = tf.image.stateless_random_contrast(image, self.contrast[0], self.contrast[1], seeds[6])
        if self.hue and channels == 3:  # hue and saturation are colour jitter: RGB-like images only
            image = tf.image.stateless_random_hue(image, self.hue, seeds[7])
        if self.saturation and channels == 3:
            image = tf.image.stateless_random_saturation(image, self.saturation[0], self.saturation[1], seeds[8])
        return tf.clip_by_value(image, 0.0, 1.0) if clip else tf.maximum(image, 0.0)


#: Named augmentation policies (``--augment``).
AUGMENTATIONS = {
    "snn4space": Augmentation(),
    "geometric": Augmentation(brightness=None, contrast=None, hue=None, saturation=None),
    # for event inputs: the geometry, and events dropped by pixel and by time instead of photometric jitter
    "events": Augmentation(brightness=None, contrast=None, hue=None, saturation=None, drop_pixels=0.1,
                           drop_time=0.25),
    "none": None,
}


def augmentation(name: str) -> Augmentation | None:
    """The augmentation policy called ``name``."""
    if name not in AUGMENTATIONS:
        raise UserError(f"unknown augmentation {name!r}: use one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def to_float(image):
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]``; a multi-band source's cached float16 ``[0, 1]`` -> float32."""
    import tensorflow as tf

    if image.dtype != tf.uint8:  # already normalised to [0, 1] (bands.Plan.prepare)
        return tf.cast(image, tf.float32)
    return tf.cast(image, tf.float32) / 255.0


def training_batches(decoded, batch_size: int, seed: int, epoch: int, augmentation: Augmentation | None,
                     transform: EdgeFilter | None = None):
    """Shuffled, augmented, batched training data for one epoch; ``transform`` applies after augmentation.

    Shuffle order and augmentation depend only on ``(seed, epoch)``, so a
    resumed run sees exactly the batches the uninterrupted run would have.
    """
    import tensorflow as tf

    epoch_seed = seed * 100003 + epoch
    count = int(decoded.cardinality())
    ds = decoded.shuffle(buffer_size=count if count > 0 else 10000, seed=epoch_seed, reshuffle_each_iteration=False)
    if augmentation is not None:
        pair_seeds = tf.data.Dataset.random(seed=epoch_seed).batch(2)
        ds = tf.data.Dataset.zip((ds, pair_seeds)).map(
            lambda xy, s: (augmentation(to_float(xy[0]), s), xy[1]), num_parallel_calls=_PARALLEL,
            deterministic=True)
    else:
        ds = ds.map(lambda x, y: (to_float(x), y))
    return _fixed_parallelism(_transformed(ds.batch(batch_size), transform).prefetch(2))


def _transformed(batches, transform: EdgeFilter | None):
    return batches if transform is None else batches.map(lambda x, y: (transform(x), y))


#: Parallel calls of the per-image maps of a batch pipeline.
_PARALLEL = max(1, min(4, os.cpu_count() or 1))


def _fixed_parallelism(ds):
    """``ds`` without tf.data's autotuning. With it, ``model.fit`` on a new pipeline each epoch returned about
    5 s after its last batch in about half of the epochs on 2 cores (5.5 s epochs took 10.7 s); with fixed
    parallelism and prefetching the epochs are as fast and none stalls."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def evaluation_batches(decoded, batch_size: int, transform: EdgeFilter | None = None):
    """Batched evaluation data, in split order, no augmentation; ``transform`` applied to each batch."""
    batches = decoded.map(lambda x, y: (to_float(x), y)).batch(batch_size)
    return _fixed_parallelism(_transformed(batches, transform).prefetch(2))
