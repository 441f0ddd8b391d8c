"""A run's model and data: :func:`build_model` (the model a config describes), :class:`RunData` and
:func:`open_run` (the run's source, classes and split), and the loaders of what the stages wrote."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import bands, data, events, models
from ..checkpoints import load_variables, load_weights, read_json
from ..errors import UserError
from ..simulation import SpikingNetwork
from ..transformers import SpikingTransformer
from .config import TrainConfig
from .files import (ANN_WEIGHTS, CLASSES, CONFIG, FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS, SNN_CONFIG, SNN_WEIGHTS, SPLIT,
                    TRANSFORMER_WEIGHTS, check_inputs, require)

def build_model(config: TrainConfig, num_classes: int, weights: str | None = None):
    """The model a config describes (``weights`` overrides ``config.weights`` of an ANN)."""
    if config.spiking:
        build = models.spikformer if config.architecture == "spikformer" else models.spike_driven_transformer
        shape = config.transformer
        return build(num_classes, shape.depth, shape.dim, shape.heads, shape.timesteps, config.image_size,
                     shape.mlp_ratio, shape.pooling, channels=config.channels)
    weights = config.weights if weights is None else weights
    if config.architecture != "vgg16":
        return models.resnet(config.architecture, num_classes, config.image_size, config.width, weights,
                             config.kernel_l2, config.bias_l1, seed=config.seed, activation=config.activation,
                             levels=config.levels, qcfs_threshold=config.qcfs_threshold, channels=config.channels,
                             layer_levels=config.layer_levels)
    return models.vgg16(num_classes, config.image_size, config.width, config.batch_norm, weights, config.kernel_l2,
                        config.bias_l1, seed=config.seed, activation=config.activation, levels=config.levels,
                        qcfs_threshold=config.qcfs_threshold, pool_before_activation=config.pool_before_activation,
                        pool_levels=config.pool_levels, channels=config.channels,
                        pre_pool_levels=config.pre_pool_levels, layer_levels=config.layer_levels)


@dataclass
class RunData:
    """The data of a run directory: source, class names, split manifest."""

    config: TrainConfig
    source: "data.ImageSource | events.EventSource"
    classes: list
    manifest: dict

    def __post_init__(self):
        # an event source: the run's binning; a multi-band source: the run's --bands and their training statistics
        if events.prepare(self.config, self.source, self.indices) is None:
            bands.prepare(self.config, self.source, self.indices)

    def indices(self, split: str) -> np.ndarray:
        return data.manifest_indices(self.source, self.manifest, split)

    def sample(self, split: str, count: int | None, seed: int) -> np.ndarray:
        """A seeded random subset of ``count`` images of ``split`` (all if None).

        Splits are stored class by class, so a prefix would hold few classes.
        """
        indices = self.indices(split)
        if count is None or count >= len(indices):
            return indices
        return np.sort(np.random.default_rng(seed).choice(indices, count, replace=False))

    def batches(self, split: str, batch_size: int, count: int | None = None, seed: int = 0):
        """Evaluation batches of ``split`` (of ``count`` of its images drawn by :meth:`sample`), input
        transform applied."""
        decoded = data.decoded_dataset(self.source, self.sample(split, count, seed), self.config.image_size)
        return data.evaluation_batches(decoded, batch_size, self.config.transform)

    @property
    def per_step(self) -> bool:
        """Whether a converted SNN takes this run's inputs one frame per step: an event run, unless binned as
        ``accumulated`` (its SNN then takes the accumulated frame at every step, as an image run's its image)."""
        return self.source.kind == "events" and self.source.binning.mode != events.ACCUMULATED

    def step_batches(self, split: str, batch_size: int, timesteps: int):
        """An event run's evaluation batches of ``split`` as per-step frames ``(batch, timesteps, s, s, 2)``, for
        a converted SNN to take frame t at step t (:meth:`SpikingNetwork.simulate`); None where not
        :attr:`per_step`."""
        if not self.per_step:
            return None
        decoded = self.source.decoded(self.indices(split), self.config.image_size, steps=timesteps)
        return data.evaluation_batches(decoded, batch_size)

    def decoded(self, split: str, image_size: int | None = None):
        return data.decoded_dataset(self.source, self.indices(split), image_size or self.config.image_size)

    def labels(self, split: str) -> np.ndarray:
        return np.asarray([label for _, label in self.manifest[split]], np.int64)


def open_run(run_dir: str | Path, data_dir: str | None = None) -> RunData:
    """Load a trained run's config, classes and split, and reopen its data.

    ``data_dir`` replaces the saved data location (for a run moved to another
    machine); the split must still find every file it lists.
    """
    run_dir = Path(run_dir)
    require(run_dir, CONFIG, CLASSES, SPLIT)
    check_inputs(run_dir, [CONFIG, CLASSES, SPLIT])
    config = TrainConfig.from_json(read_json(run_dir / CONFIG))
    classes = read_json(run_dir / CLASSES)
    manifest = read_json(run_dir / SPLIT)
    if data_dir is not None:
        config.data_dir = data_dir
        if config.dataset not in data.TFDS_NAMES:
            config.dataset = data_dir
    source = events.open_source(config.dataset, config.data_dir, config.event_sensor_size)
    if source.classes != classes:
        raise UserError(f"the data at {source.name} has classes {source.classes[:3]}... but the run was trained on "
                        f"{classes[:3]}...: point --data-dir at the data the run was trained on")
    return RunData(config, source, classes, manifest)


def weights_file(config: TrainConfig) -> str:
    """The run-directory file that holds the trained model's weights."""
    return TRANSFORMER_WEIGHTS if config.spiking else ANN_WEIGHTS


def load_trained_model(run_dir: str | Path, config: TrainConfig, num_classes: int):
    """Rebuild the model ``config`` describes and load the run's trained weights into it."""
    run_dir = Path(run_dir)
    name = weights_file(config)
    require(run_dir, name)
    check_inputs(run_dir, [name])
    model = build_model(config, num_classes, weights="none")
    load_weights(model, run_dir / name, what="transformer weights" if config.spiking else "ANN weights")
    return model


def load_ann(run_dir: Path, config, num_classes: int):
    """Rebuild a run's ANN from its TrainConfig and load its trained weights."""
    if config.spiking:
        raise UserError(f"{run_dir} holds a directly trained {config.architecture}, which is already a spiking "
                        "network: there is no ANN to convert or fine-tune; cost it with energy_estimation.py")
    return load_trained_model(run_dir, config, num_classes)


def load_snn(run_dir: Path, timesteps: int | None = None, config_name: str = SNN_CONFIG,
             weights_name: str = SNN_WEIGHTS, **overrides):
    """Rebuild a run's SpikingNetwork from its JSON config and weights file.

    ``timesteps`` and ``overrides`` replace entries of the saved config.
    """
    run_dir = Path(run_dir)
    require(run_dir, config_name, weights_name)
    check_inputs(run_dir, [config_name, weights_name])
    config = read_json(run_dir / config_name) | overrides
    if timesteps is not None:
        config["timesteps"] = timesteps
    try:
        snn = SpikingNetwork.from_config(config)
    except (TypeError, ValueError, KeyError) as exc:
        raise UserError(f"{run_dir / config_name} does not describe a spiking network ({exc}): re-run the stage "
                        f"that wrote it") from None
    load_variables(snn.weights, run_dir / weights_name, what="SNN weights")
    return snn


def load_fine_tuned(run_dir: Path, timesteps: int | None = None):
    """The fine-tuned SNN of a run."""
    return load_snn(run_dir, timesteps, FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS)


def load_trained(run_dir, config, num_classes: int, timesteps: int | None = None) -> SpikingTransformer:
    """A run's trained spiking transformer (optionally run for another number of ``timesteps``)."""
    if timesteps is not None:
        config = dataclasses.replace(config, transformer=dataclasses.replace(config.transformer,
                                                                             timesteps=int(timesteps)))
    return load_trained_model(run_dir, config, num_classes)
