"""Training's optimizers (``--optimizer``) and the plateau schedule of the learning rate and early stopping."""
from __future__ import annotations

import math

from .transfer import with_backbone_rate

#: The optimizers of ``--optimizer``: class and fixed arguments.
OPTIMIZER_CLASSES = {"rmsprop": ("RMSprop", {}), "adam": ("Adam", {}), "adamw": ("AdamW", {}),
                     "sgd": ("SGD", {"momentum": 0.9, "nesterov": True})}


def make_optimizer(name: str, learning_rate: float, weight_decay: float = 0.0, backbone_rate: bool = False):
    """The optimizer of ``--optimizer``; with ``backbone_rate``, one that scales the backbone's updates
    (:class:`transfer.BackboneRate`: call its ``set_backbone``)."""
    import tensorflow as tf

    class_name, fixed = OPTIMIZER_CLASSES[name]
    optimizer_class = getattr(tf.keras.optimizers, class_name)
    if backbone_rate:
        optimizer_class = with_backbone_rate(optimizer_class)
    if name == "adamw":
        fixed = dict(fixed, weight_decay=weight_decay)
    return optimizer_class(learning_rate, **fixed)


class PlateauSchedule:
    """ReduceLROnPlateau on val_loss and EarlyStopping on val_accuracy, with JSON state, for a
    :class:`~snn4vision.rundir.TrainConfig` (``lr_schedule``, ``lr_patience``, ``lr_factor``, ``min_learning_rate``,
    ``stop_patience``)."""

    def __init__(self, config, state: dict | None = None):
        self.config = config
        self.state = dict(state or {"best_val_loss": math.inf, "lr_wait": 0, "best_val_accuracy": -1.0,
                                    "stop_wait": 0, "best_epoch": -1})
        if self.state["best_val_loss"] is None:  # strict JSON saved the infinity of no best epoch yet as null
            self.state["best_val_loss"] = math.inf

    def update(self, epoch: int, val_loss: float, val_accuracy: float, optimizer,
               eligible: bool = True) -> tuple[bool, bool]:
        """Returns (improved, stop); an epoch that is not ``eligible`` (ReLU warm-up of QCFS) is never the best."""
        s, c = self.state, self.config
        if not eligible:
            return False, False
        if val_loss < s["best_val_loss"] - 1e-4:
            s["best_val_loss"], s["lr_wait"] = val_loss, 0
        else:
            s["lr_wait"] += 1
            if s["lr_wait"] >= c.lr_patience and c.lr_schedule == "plateau":
                lr = float(optimizer.learning_rate.numpy())
                new_lr = max(lr * c.lr_factor, c.min_learning_rate)
                if new_lr < lr:
                    optimizer.learning_rate.assign(new_lr)
                    print(f"  learning rate {lr:.2e} -> {new_lr:.2e}")
                s["lr_wait"] = 0
        improved = val_accuracy > s["best_val_accuracy"]
        if improved:
            s["best_val_accuracy"], s["stop_wait"], s["best_epoch"] = val_accuracy, 0, epoch
        else:
            s["stop_wait"] += 1
        # a cosine schedule is a budget to spend: no early stopping
        return improved, c.lr_schedule == "plateau" and s["stop_wait"] >= c.stop_patience
