"""Image data, one module per concern, every name re-exported here: sources (:mod:`~snn4vision.data.sources`),
seeded stratified splits (:mod:`~snn4vision.data.splits`), decoding (:mod:`~snn4vision.data.decoding`),
augmentation and batches (:mod:`~snn4vision.data.batches`).

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
from .sources import (IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, TFDS_LAYOUTS, TFDS_NAMES, TIFF_EXTENSIONS,
                      TIFF_MAGIC, ImageSource, check_cache_memory, check_images, image_header, is_tiff, open_source,
                      open_tfds, scan_folder, tiff_layout, warn)
from .splits import MAX_SEED, SPLITS, manifest_indices, split_manifest, stratified_folds, stratified_split
from .decoding import (decode_image, decoded_dataset, explain_bad_images, load_image_file, resize_uint8,
                       tf_error_text)
from .batches import AUGMENTATIONS, Augmentation, augmentation, evaluation_batches, to_float, training_batches

__all__ = [
    "AUGMENTATIONS", "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "MAX_SEED", "MIN_IMAGE_SIDE", "SPLITS",
    "TFDS_LAYOUTS", "TFDS_NAMES", "TIFF_EXTENSIONS", "TIFF_MAGIC", "Augmentation", "ImageSource",
    "augmentation", "check_cache_memory", "check_images", "decode_image", "decoded_dataset",
    "evaluation_batches", "explain_bad_images", "image_header", "is_tiff", "load_image_file",
    "manifest_indices", "open_source", "open_tfds", "resize_uint8", "scan_folder", "split_manifest",
    "stratified_folds", "stratified_split", "tf_error_text", "tiff_layout", "to_float", "training_batches",
    "warn",
]
