"""Classification metrics shared by every stage."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """``matrix[true, predicted]`` counts."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return matrix


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], classes: Sequence[str]) -> dict:
    """Accuracy, per-class accuracy (recall) and the confusion matrix, as JSON-ready values."""
    matrix = confusion_matrix(labels, predictions, len(classes))
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    total = int(matrix.sum())
    return {
        "accuracy": float(matrix.diagonal().sum() / total) if total else float("nan"),
        "num_images": total,
        "per_class_accuracy": {name: float(a) for name, a in zip(classes, per_class)},
        "confusion_matrix": matrix.tolist(),
    }


def diverging(num_classes: int, *losses: float) -> bool:
    """A non-finite loss, or one above 100 x the cross-entropy of guessing (ln C): no learning network gets there,
    and an exploding one gets there (8.7e13 after one epoch of SGD at 1e3) before it overflows."""
    bound = 100 * math.log(max(num_classes, 2))
    return any(not math.isfinite(loss) or loss > bound for loss in losses)
