"""Transfer learning between runs: start a model from another run's weights, with its own head.

:func:`transfer_weights` copies every weight whose name and shape match from
a finished training run into a freshly built model, except the classifier
head whenever the class lists differ (a new head for the new classes).
:class:`BackboneRate` gives an optimizer a learning-rate factor for the copied
backbone: 0 freezes it, 0.1 fine-tunes it ten times slower than the head.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import tensorflow as tf

from . import rundir
from .checkpoints import read_json
from .errors import UserError
from .transformers import SpikingTransformer


def head_layer(model) -> tf.keras.layers.Layer:
    """The classifier head: a spiking transformer's ``head``, else the model's last layer with weights."""
    if isinstance(model, SpikingTransformer):
        return model.head
    return next(layer for layer in reversed(model.layers) if layer.weights)


def _layer_of(name: str) -> str:
    """``block1_conv1`` of ``block1_conv1/kernel:0``; ``sdt/block0/attn/q_bn`` of ``.../q_bn/gamma:0``."""
    return name.split(":")[0].rsplit("/", 1)[0]


@dataclass
class Transfer:
    """What :func:`transfer_weights` did (saved in ``config.json`` as ``transfer``)."""

    source: str
    source_architecture: str
    source_classes: int
    copied: list = field(default_factory=list)  # layers all of whose weights were copied
    skipped: dict = field(default_factory=dict)  # layer -> why it kept its fresh weights
    copied_values: int = 0  # scalars copied

    def to_json(self) -> dict:
        return asdict(self)


def transfer_weights(model, source_run: str | Path, classes: list) -> Transfer:
    """Copy into ``model`` every weight of ``source_run``'s trained model with the same name and shape.

    The head (:func:`head_layer`) is copied only when ``classes`` equal the
    source run's classes; otherwise it keeps its fresh initialisation. Raises
    a UserError when nothing but the head could be copied (another
    architecture or width).
    """
    source_run = Path(source_run)
    if not source_run.is_dir():
        raise UserError(f"--init-from {source_run} is not a run directory: give the --run of a finished training run")
    rundir.require(source_run, rundir.CONFIG, rundir.CLASSES)
    source_config = rundir.TrainConfig.from_json(read_json(source_run / rundir.CONFIG))
    source_classes = read_json(source_run / rundir.CLASSES)
    source = rundir.load_trained_model(source_run, source_config, len(source_classes))
    stored = {w.name: w for w in source.weights}
    same_classes = list(source_classes) == list(classes)
    head = {id(w) for w in head_layer(model).weights}
    report = Transfer(str(source_run), source_config.architecture, len(source_classes))
    copied, skipped = {}, {}
    for weight in model.weights:
        layer = _layer_of(weight.name)
        value = stored.get(weight.name)
        if id(weight) in head and not same_classes:
            skipped.setdefault(layer, f"new head for {len(classes)} classes (the source has {len(source_classes)})")
        elif value is None:
            skipped.setdefault(layer, "not in the source")
        elif tuple(value.shape) != tuple(weight.shape):
            skipped.setdefault(layer, f"shape {tuple(weight.shape)} here, {tuple(value.shape)} in the source")
        else:
            copied.setdefault(layer, []).append((weight, value))
    copied = {layer: pairs for layer, pairs in copied.items() if layer not in skipped}
    if not any(id(weight) not in head for pairs in copied.values() for weight, _ in pairs):
        shape = (f"dim {source_config.transformer.dim}, depth {source_config.transformer.depth}"
                 if source_config.spiking
                 else f"width {source_config.width:g}")
        raise UserError(f"--init-from {source_run}: no weight of its {source_config.architecture} ({shape}) has the "
                        "name and shape of one of this model's: start from a run of the same --architecture (or "
                        "--model) and --width (or --dim)")
    for pairs in copied.values():
        for weight, value in pairs:
            weight.assign(value)
            report.copied_values += int(value.shape.num_elements())
    report.copied, report.skipped = sorted(copied), dict(sorted(skipped.items()))
    return report


def backbone_variables(model, layers: list | None = None) -> list:
    """The trainable variables outside the head, of ``layers`` only if given (:attr:`Transfer.copied`: layers
    that kept fresh weights train at the head's rate)."""
    head = {id(w) for w in head_layer(model).weights}
    return [v for v in model.trainable_variables
            if id(v) not in head and (layers is None or _layer_of(v.name) in layers)]


class BackboneRate:
    """Mixin for a Keras optimizer: the backbone's updates scaled by :attr:`factor` (0 freezes it).

    Scaling a variable's whole update, gradient step and decoupled weight
    decay alike, is the same as giving it ``factor`` times the learning rate,
    for SGD with momentum, Adam, AdamW and RMSprop: their moments do not
    depend on the rate. Make the class with :func:`with_backbone_rate`.
    """

    def set_backbone(self, variables: list, factor: float = 1.0) -> None:
        """Mark ``variables`` as the backbone (call inside the strategy's scope, before a checkpoint restore)."""
        self._backbone_keys = {self._var_key(v) for v in variables}
        self.backbone_factor = tf.Variable(float(factor), trainable=False, dtype=tf.float32, name="backbone_factor")

    def _in_backbone(self, variable) -> bool:
        return self._var_key(variable) in getattr(self, "_backbone_keys", ())

    def _apply_weight_decay(self, variables):
        # the backbone's decay is applied, scaled, in update_step
        super()._apply_weight_decay([v for v in variables if not self._in_backbone(v)])

    def update_step(self, gradient, variable):
        if not self._in_backbone(variable):
            return super().update_step(gradient, variable)
        before = tf.identity(variable)
        if self.weight_decay is not None and self._use_weight_decay(variable):
            variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype)
                                * tf.cast(self.learning_rate, variable.dtype))
        super().update_step(gradient, variable)
        variable.assign(before + tf.cast(self.backbone_factor, variable.dtype) * (variable - before))


def with_backbone_rate(optimizer_class: type) -> type:
    """``optimizer_class`` (a ``tf.keras.optimizers`` class) with :class:`BackboneRate` mixed in."""
    return type(f"{optimizer_class.__name__}WithBackboneRate", (BackboneRate, optimizer_class), {})
