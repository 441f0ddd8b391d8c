"""Seeded stratified splits (:func:`stratified_split`) and folds (:func:`stratified_folds`), and a run's split
manifest (``split.json``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserError
from .sources import ImageSource

SPLITS = ("train", "val", "test")
#: The largest --seed: tf.keras.utils.set_random_seed seeds NumPy's legacy generator, which takes 0 .. 2**32 - 1.
MAX_SEED = 2 ** 32 - 1


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


