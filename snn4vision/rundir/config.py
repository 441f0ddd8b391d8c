"""The run's configuration: :class:`TrainConfig` (saved as ``config.json``) and the named presets it starts
from (:data:`PRESETS`)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import bands, data, edges, events, models, resources
from ..errors import UserError
from .transformer_config import TRANSFORMER_PRESETS, TransformerConfig

OPTIMIZERS = ("rmsprop", "adam", "adamw", "sgd")
#: ANNs that train_ann.py trains and convert_snn.py converts.
ANN_ARCHITECTURES = ("vgg16", "resnet18", "resnet20")
#: The ANNs, then the spiking transformers that train_spiking_transformer.py trains directly.
TRANSFORMER_ARCHITECTURES = ("spikformer", "sdt")
ARCHITECTURES = ANN_ARCHITECTURES + TRANSFORMER_ARCHITECTURES
LR_SCHEDULES = ("plateau", "cosine")


#: Named configurations of train_ann.py and run_all.py; explicit flags override them, and
#: :meth:`TrainConfig.from_preset` adds the defaults that follow from the flags.
PRESETS = {
    # SNN4Space: ImageNet-pretrained VGG-16 at 224x224, RMSprop 1e-3, plateau schedule.
    "paper": dict(image_size=224, width=1.0, batch_norm=False, weights="imagenet", batch_size=32, epochs=100,
                  augment="snn4space",
                  optimizer="rmsprop", learning_rate=1e-3, lr_schedule="plateau", warmup_epochs=0, lr_patience=5,
                  lr_factor=0.1, stop_patience=10, qcfs_warmup=0.0),
    # From scratch in about 12 minutes of training on 2 CPU cores (UC Merced, 1,680 images); chosen by the
    # ablation in benchmarks/results/ann_recipe.md: cosine decay over the whole budget (no early stopping),
    # width 0.25 (4x fewer MACs than 0.5, so 2.5x the epochs in the same time), geometric augmentation only.
    # QCFS networks train as ReLU for 75 % of the epochs, then quantise at L = 2 (lambda of least error), with a
    # sparsity penalty (1 when chosen there, 2 now: below) and each pooled map requantised at 2L levels
    # (pool_levels: 2 x levels, whatever --levels says): on the accuracy/energy front
    # (benchmarks/results/energy_pareto.md, seeds 0-2) the SNN at T = 1 costs 0.41x its ANN on loihi, against
    # 0.53x without the requantised pooling, for 0.9 points of ANN accuracy (within the seeds' spread). ReLU networks train without the penalty unless asked. 130 epochs (from
    # 100) with the quantised quarter distilled from the ReLU warm-up (distill 0.7): +1.1 points for the SNN on the
    # 5-fold cross-validation, paired with 100 epochs undistilled (benchmarks/results/cross_validation.md), at
    # 0.41x on loihi; from_preset switches distillation off where there is no warm-up to distil from. A penalty of
    # 2 (from 1): the same accuracy on those folds (-0.0 [-1.9, +1.8] points paired) at 0.37x on loihi, against
    # 0.41x; without the penalty 0.45x, and no more accuracy. The activations each requantised pooling reads at 2L
    # levels too (pre_pool_levels, derived from L like pool_levels): +1.0 [-1.2, +3.2] points on those folds at the
    # same 0.37x on loihi (their spikes reach the pooling only), and 1.3 [0.4, 2.2] under the ReLU ANN, from 2.3.
    "quick": dict(image_size=64, width=0.25, batch_norm=True, weights="none", batch_size=32, epochs=130,
                  augment="geometric", optimizer="adam", learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=1,
                  min_learning_rate=1e-5, levels=2, qcfs_warmup=0.75, sparsity=2.0, pool_levels=4, distill=0.7,
                  pre_pool_levels=4),
    # The longer budget (not yet measured): width 0.5 and 160 epochs, about 50 minutes on 2 CPU cores.
    "full": dict(image_size=64, width=0.5, batch_norm=True, weights="none", batch_size=32, epochs=160,
                 augment="geometric", optimizer="adam", learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=2,
                 min_learning_rate=1e-5, levels=2, qcfs_warmup=0.75, sparsity=1.0, pool_levels=4, pre_pool_levels=4),
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``); the defaults are the quick preset.

    ``architecture`` "vgg16", "resnet18" or "resnet20" is an ANN of ``train_ann.py``; "spikformer" and
    "sdt" are spiking transformers (``train_spiking_transformer.py``), shaped by ``transformer`` (a
    :class:`TransformerConfig`, given as one or as a dict; None for an ANN).
    """

    run_dir: str
    dataset: str = "uc_merced"
    data_dir: str | None = None
    image_size: int = 64
    width: float = 0.25
    batch_norm: bool = True
    weights: str = "none"
    batch_size: int = 32
    epochs: int = 100
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    split: tuple = (0.8, 0.1, 0.1)
    # stratified K-fold cross-validation (data.stratified_folds): the test split is fold ``fold`` of ``folds``,
    # and split's train:val proportion divides the rest (0: off, the split above)
    folds: int = 0
    fold: int = 0
    augment: str = "geometric"  # a name in data.AUGMENTATIONS
    lr_patience: int = 3  # epochs without val_loss improvement before the LR drops
    lr_factor: float = 0.5
    min_learning_rate: float = 1e-5
    stop_patience: int = 8  # epochs without val_accuracy improvement before stopping
    preset: str | None = None
    kernel_l2: float = 1e-4
    bias_l1: float = 1e-5
    activation: str = "relu"  # or "qcfs"
    levels: int = 4  # QCFS quantisation levels
    qcfs_threshold: float = 2.0  # initial (trainable) QCFS threshold lambda
    architecture: str = "vgg16"
    transformer: TransformerConfig | None = None  # the spiking transformer's shape (None: an ANN)
    weight_decay: float = 0.0  # decoupled weight decay (adamw)
    lr_schedule: str = "cosine"  # or "plateau" (per epoch, to min_learning_rate, after warmup_epochs)
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    # QCFS ANNs: train this fraction of the epochs as ReLU, then quantise, each lambda where QCFS reproduces the
    # layer's activations best (0: QCFS from the start)
    qcfs_warmup: float = 0.75
    # QCFS with a ReLU warm-up under the cosine schedule: 0 spends one cosine over all the epochs; r > 0 spends the
    # warm-up's own cosine to min_learning_rate by its last epoch (a converged ReLU network, and teacher), then
    # restarts a cosine for the quantised epochs at r x learning_rate
    qcfs_restart: float = 0.0
    # QCFS with a ReLU warm-up: distil the quantised network from the warm-up's ReLU network at this weight of the
    # loss (0: off), on logits softened by distill_temperature; see losses.distillation_loss
    distill: float = 0.0
    distill_temperature: float = 4.0
    # weight of the SNN's expected synaptic operations per ANN MAC in the loss (0: off); see add_sparsity_penalty
    sparsity: float = 0.0
    # VGG-16: pool each block's last conv before its activation (models.vgg16), so that its SNN has 4x fewer
    # neurons and synaptic operations there
    pool_before_activation: bool = False
    # VGG-16 with QCFS: a QCFS activation of this many levels after each block's pooling (0: none; models.vgg16)
    pool_levels: int = 0
    # VGG-16 with pool_levels: the levels of the activations each pooling reads (0: levels; models.vgg16)
    pre_pool_levels: int = 0
    # QCFS: {layer name: L}, the levels of the named QCFS layers over levels, pre_pool_levels and pool_levels
    # (models.vgg16, models.resnet; {}: none)
    layer_levels: dict = field(default_factory=dict)
    # edge-filter input (edges.parse): "none", "prewitt", "sobel_sq_mask", ...; applied by every stage
    input_transform: str = "none"
    # transfer learning: start from this run's weights (a new head for new classes), the backbone frozen for the
    # first freeze_backbone epochs, then trained at backbone_lr_factor x the learning rate
    init_from: str | None = None
    freeze_backbone: int = 0
    backbone_lr_factor: float = 1.0
    transfer: dict = field(default_factory=dict)  # what was copied (transfer.Transfer), written by training
    # multi-band images (snn4vision.bands): --bands as given (None: every band), and the selected bands with the
    # training split's per-band statistics (bands.Plan), written by training; both empty for RGB runs and older runs
    bands: str | None = None
    band_stats: dict = field(default_factory=dict)
    # event datasets (snn4vision.events): --event-binning and --event-duration-us as given (None: time binning over
    # each recording's span), and what training did (events.Binning: sensor size, mode, frames, duration, scale),
    # written by training; empty for image runs and older runs
    event_binning: str | None = None
    event_duration_us: int | None = None
    event_sensor_size: list | None = None  # --sensor-size WIDTH HEIGHT, for files that do not store theirs
    events: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.transformer, dict):
            self.transformer = TransformerConfig.from_json(self.transformer)
        elif not isinstance(self.transformer, (TransformerConfig, type(None))):
            raise UserError(f"transformer must be a TransformerConfig or a dict of its fields "
                            f"({', '.join(TransformerConfig.field_names())}), got {self.transformer!r}")
        if self.transformer is None and self.architecture in TRANSFORMER_ARCHITECTURES:
            self.transformer = TransformerConfig()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TrainConfig":
        """The ANN preset ``name`` of :data:`PRESETS` with ``overrides`` (``run_dir`` among them), and the defaults
        that follow from both, which the CLI, the benchmarks and library callers all get from here:

        - ``sparsity`` 0 for a ReLU network (the presets' penalty was measured on QCFS networks only);
        - ``distill`` 0 where there is no ReLU warm-up to distil from (a ReLU network, QCFS from the start, or
          too few epochs for a warm-up epoch);
        - ``qcfs_restart`` 0 where there is no ReLU warm-up to end, or no cosine schedule to restart;
        - the presets' requantised pooled maps (``pool_levels``) at 2L levels for a QCFS VGG-16 that pools after
          its activations, and none for any other network;
        - the activations those pooled maps read (``pre_pool_levels``) at 2L levels too, and at ``levels`` (0)
          where nothing is requantised.

        A key in ``overrides`` is taken as given, derived defaults included."""
        if name not in PRESETS:
            raise UserError(f"unknown preset {name!r}: choose one of {', '.join(sorted(PRESETS))}")
        config = cls(**{**PRESETS[name], "preset": name, **overrides})
        if "sparsity" not in overrides and config.activation != "qcfs":
            config.sparsity = 0.0
        if "distill" not in overrides and config.qcfs_from_epoch == 0:
            config.distill = 0.0  # nothing to distil from: a ReLU network, or QCFS without a ReLU warm-up
        if "qcfs_restart" not in overrides and (config.qcfs_from_epoch == 0 or config.lr_schedule != "cosine"):
            config.qcfs_restart = 0.0
        plain = config.activation != "qcfs" or config.architecture != "vgg16" or config.pool_before_activation
        if "pool_levels" not in overrides and config.pool_levels:
            config.pool_levels = 0 if plain else 2 * config.levels
        if "pre_pool_levels" not in overrides and config.pre_pool_levels:
            config.pre_pool_levels = 0 if plain or not config.pool_levels else 2 * config.levels
        return config

    @classmethod
    def from_transformer_preset(cls, name: str, **overrides) -> "TrainConfig":
        """The spiking transformer preset ``name`` of :data:`TRANSFORMER_PRESETS` with ``overrides``: TrainConfig
        fields, or the shape's fields (``depth``, ``timesteps``, ...), which go into ``transformer``."""
        if name not in TRANSFORMER_PRESETS:
            raise UserError(f"unknown preset {name!r}: choose one of {', '.join(sorted(TRANSFORMER_PRESETS))}")
        preset = dict(TRANSFORMER_PRESETS[name])
        shape = dict(preset.pop("transformer"))
        shape |= {k: overrides.pop(k) for k in TransformerConfig.field_names() if k in overrides}
        overrides.setdefault("architecture", TRANSFORMER_ARCHITECTURES[0])
        return cls(**{**preset, "preset": name, **overrides, "transformer": TransformerConfig(**shape)})

    def validate(self) -> None:
        checks = [
            (self.image_size >= 16, f"--image-size must be at least 16, got {self.image_size}"),
            (self.folds == 0 or (self.folds >= 2 and 0 <= self.fold < self.folds),
             f"--fold must be one of 0 .. {self.folds - 1} with --folds {self.folds} (--folds at least 2, or 0: off)"),
            (self.width > 0, f"--width must be positive, got {self.width}"),
            (0 <= self.seed <= data.MAX_SEED, f"--seed must be 0 to {data.MAX_SEED} (2**32 - 1, what NumPy's seeding "
                                              f"accepts), got {self.seed}"),
            (not self._split_problem(), self._split_problem()),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.learning_rate > 0, f"--learning-rate must be positive, got {self.learning_rate}"),
            (self.augment in data.AUGMENTATIONS,
             f"--augment must be one of {', '.join(data.AUGMENTATIONS)}, got {self.augment!r}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.architecture in ARCHITECTURES,
             f"unknown architecture {self.architecture!r}: use one of {', '.join(ARCHITECTURES)}"),
            (self.batch_norm or not self.architecture.startswith("resnet"),
             f"{self.architecture} always has BatchNorm (folded at conversion): drop --no-batch-norm"),
            (self.lr_schedule in LR_SCHEDULES,
             f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.sparsity >= 0 and math.isfinite(self.sparsity),
             f"--sparsity must be 0 (off) or positive, got {self.sparsity}"),
            (not self.sparsity or not self.spiking, "--sparsity applies to the ANNs of train_ann.py only"),
            (not self.pool_levels or (self.architecture == "vgg16" and self.activation == "qcfs"
                                      and not self.pool_before_activation),
             "--pool-levels requantises the pooled maps of a QCFS vgg16 that pools after its activations: it needs "
             "--architecture vgg16, --activation qcfs and no --pool-before-activation"),
            (self.pool_levels >= 0, f"--pool-levels must be 0 (off) or positive, got {self.pool_levels}"),
            (self.pre_pool_levels >= 0,
             f"--pre-pool-levels must be 0 (--levels) or positive, got {self.pre_pool_levels}"),
            (not self.pre_pool_levels or self.pool_levels,
             "--pre-pool-levels sets the levels of the activations that a requantised pooling reads: it needs "
             "--pool-levels"),
            (not self.layer_levels or (self.activation == "qcfs" and not self.spiking),
             "--layer-levels sets the levels of QCFS layers: it needs --activation qcfs and an ANN architecture"),
            (isinstance(self.layer_levels, dict) and all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
                for k, v in self.layer_levels.items()),
             f"--layer-levels takes LAYER=L with L a whole number of at least 1 (layer_levels: a dict of them), "
             f"got {self.layer_levels!r}"),
            (not self.pool_before_activation or self.architecture == "vgg16",
             f"--pool-before-activation applies to vgg16, whose blocks end in a pooling; {self.architecture} has "
             "none: drop it"),
            (0 <= self.qcfs_warmup < 1, f"--qcfs-warmup must be in [0, 1) so that the network ends quantised, "
                                        f"got {self.qcfs_warmup}"),
            (0 <= self.qcfs_restart <= 1 and math.isfinite(self.qcfs_restart),
             f"--qcfs-restart must be in [0, 1] (the quantised epochs' first rate as a fraction of "
             f"--learning-rate; 0: off), got {self.qcfs_restart}"),
            (not self.qcfs_restart or (self.qcfs_from_epoch > 0 and self.lr_schedule == "cosine"),
             "--qcfs-restart restarts the cosine schedule where the ReLU warm-up ends: it needs --activation qcfs, "
             "a --qcfs-warmup that leaves at least one ReLU epoch and --lr-schedule cosine"),
            (0 <= self.distill < 1 and math.isfinite(self.distill),
             f"--distill must be in [0, 1) (the weight of the teacher's term; 0: off), got {self.distill}"),
            (not self.distill or self.qcfs_from_epoch > 0,
             "--distill distils a QCFS network from its own ReLU warm-up: it needs --activation qcfs and a "
             "--qcfs-warmup that leaves at least one ReLU epoch"),
            (self.distill_temperature > 0 and math.isfinite(self.distill_temperature),
             f"--distill-temperature must be positive, got {self.distill_temperature}"),
            (self.transformer is not None or not self.spiking,
             f"the {self.architecture} needs its shape: give transformer=TransformerConfig(...)"),
            (self.transformer is None or self.spiking,
             f"a transformer shape (depth, dim, heads, timesteps, mlp_ratio, pooling) applies to "
             f"{' and '.join(TRANSFORMER_ARCHITECTURES)}, not to {self.architecture}: drop it"),
            (self.init_from is not None or (self.freeze_backbone == 0 and self.backbone_lr_factor == 1.0),
             "--freeze-backbone and --backbone-lr-factor apply to a backbone copied by --init-from RUN: add it"),
            (0 <= self.freeze_backbone <= self.epochs,
             f"--freeze-backbone must be 0 to --epochs ({self.epochs}) epochs, got {self.freeze_backbone}"),
            (self.backbone_lr_factor > 0 and math.isfinite(self.backbone_lr_factor),
             f"--backbone-lr-factor must be positive, got {self.backbone_lr_factor}"),
            (self.init_from is None or self.weights in ("none", None),
             f"--init-from and --weights {self.weights} both set the initial weights: give one"),
            (self.init_from is None or Path(self.init_from).resolve() != Path(self.run_dir).resolve(),
             "--init-from names this run's own directory: start from another run"),
            (self.event_binning in (None, *events.RUN_BINNINGS),
             f"--event-binning must be one of {', '.join(events.RUN_BINNINGS)}, got {self.event_binning!r}"),
            (self.event_sensor_size is None or (len(self.event_sensor_size) == 2
                                                 and all(int(v) >= 1 for v in self.event_sensor_size)),
             f"--sensor-size takes a width and a height of at least 1 pixel, got {self.event_sensor_size!r}"),
            (self.event_duration_us is None or self.event_duration_us >= 1,
             f"--event-duration-us must be at least 1 microsecond, got {self.event_duration_us}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        edges.parse(self.input_transform)
        bands.parse_selection(self.bands)
        if self.spiking:
            self.transformer.validate()

    def _split_problem(self) -> str | None:
        """What is wrong with ``split``: every split is used (val picks the best epoch, test scores the ANN and
        its SNN), so each needs a positive fraction; with --folds the folds give the test split."""
        split = tuple(self.split)
        given = " ".join(f"{f:g}" for f in split) if all(isinstance(f, (int, float)) for f in split) else split
        if len(split) != 3 or not all(isinstance(f, (int, float)) and math.isfinite(f) and f >= 0 for f in split):
            return f"--split must be three fractions TRAIN VAL TEST, got {given}"
        if self.folds:
            return None if min(split[:2]) > 0 else f"--split needs positive TRAIN and VAL fractions, got {given}"
        if min(split) <= 0 or not math.isclose(sum(split), 1.0, abs_tol=1e-6):
            return (f"--split must be three positive fractions TRAIN VAL TEST summing to 1 (val picks the best "
                    f"epoch, test scores the ANN and its SNN), got {given}: e.g. --split 0.8 0.1 0.1")
        return None

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"split": list(self.split)}

    @classmethod
    def from_json(cls, obj: dict) -> "TrainConfig":
        obj = dict(obj)
        # runs written before the transformer's shape had its own config kept its six fields flat, ANN runs
        # included (with the defaults, unused): a transformer run's go into its shape, an ANN run's are dropped
        flat = {k: obj.pop(k) for k in TransformerConfig.field_names() if k in obj}
        if flat and obj.get("transformer") is None and obj.get("architecture") in TRANSFORMER_ARCHITECTURES:
            obj["transformer"] = flat
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - names
        if unknown:
            raise UserError(f"config.json has unknown keys {sorted(unknown)}: was it written by another version?")
        # runs written before these keys existed trained without them
        obj = {"label_smoothing": 0.0, "qcfs_warmup": 0.0, "sparsity": 0.0, "input_transform": "none",
               "qcfs_restart": 0.0, "pre_pool_levels": 0} | obj
        return cls(**{k: tuple(v) if k == "split" else v for k, v in obj.items()})

    @property
    def transform(self) -> edges.EdgeFilter | None:
        """The input transform every stage applies to every batch (None: plain images)."""
        return edges.parse(self.input_transform)

    @property
    def channels(self) -> int:
        """Input channels of the run's models: 3 (RGB), the bands selected from a multi-band source, or 2 (an
        event run's OFF and ON counts)."""
        return 2 if self.events else bands.channels_of(self)

    @property
    def qcfs_from_epoch(self) -> int:
        """The first QCFS epoch (0-based) after the ReLU warm-up; 0 without one."""
        if self.activation != "qcfs" or self.spiking:
            return 0
        return int(math.floor(self.qcfs_warmup * self.epochs))

    @property
    def spiking(self) -> bool:
        """True for a directly trained spiking transformer."""
        return self.architecture not in ANN_ARCHITECTURES

    def check_transformer_memory(self, batch_size: int, training: bool, timesteps: int | None = None) -> None:
        """Refuse a spiking transformer's batch (all T steps unrolled at once; ``timesteps``, default the
        trained T) that would not fit in memory."""
        steps = timesteps or self.transformer.timesteps
        needed = self.transformer.memory_bytes(self.image_size, batch_size, steps, training)
        resources.check_memory(needed, f"{'training' if training else 'running'} the {self.architecture} at "
                                       f"T = {steps} on batches of {batch_size}",
                               "lower --timesteps or --batch-size")

    def check_ann_memory(self, batch_size: int) -> None:
        """Refuse an ANN batch whose activations would not fit in memory (a mistyped --image-size 6400 would
        otherwise be killed by the out-of-memory killer without a word)."""
        needed = resources.conv_net_training_bytes(self.conv_maps(), batch_size)
        resources.check_memory(needed, f"training the {self.architecture} on {self.image_size}x{self.image_size} "
                                       f"images in batches of {batch_size}",
                               f"lower --image-size (now {self.image_size}) or --batch-size (now {batch_size})")

    def conv_maps(self) -> list:
        """``(side, channels)`` of each conv layer's output of the ANN (VGG-16 or a ResNet)."""
        side, maps = self.image_size, []
        if self.architecture == "vgg16":
            for channels, pooled in zip(*models.vgg16_layout(self.width)):
                maps.append((side, channels))
                side = side // 2 if pooled else side
            return maps
        stages = models.RESNET_STAGES[self.architecture]
        maps.append((side, models.scaled_channels(stages[0][0], self.width)))  # the stem
        for channels, blocks, stride in stages:
            side = -(-side // stride)  # "same" padding: ceil
            maps += [(side, models.scaled_channels(channels, self.width))] * (2 * blocks + 1)  # and a projection
        return maps

    def learning_rate_at(self, epoch: int) -> float | None:
        """The cosine schedule's rate for ``epoch`` (0-based); None under the plateau schedule. With
        ``qcfs_restart``, the ReLU warm-up's cosine ends at its last epoch and the quantised epochs run their own."""
        if self.lr_schedule != "cosine":
            return None
        low = min(self.min_learning_rate, self.learning_rate)
        if epoch < self.warmup_epochs:
            return self.learning_rate * (epoch + 1) / (self.warmup_epochs + 1)
        # the cosine this epoch is on: from top at epoch start, reaching low at epoch end
        if not self.qcfs_restart:
            top, start, end = self.learning_rate, self.warmup_epochs, self.epochs
        elif epoch < self.qcfs_from_epoch:
            top, start, end = self.learning_rate, self.warmup_epochs, self.qcfs_from_epoch - 1
        else:
            top, start, end = max(low, self.qcfs_restart * self.learning_rate), self.qcfs_from_epoch, self.epochs - 1
        progress = (epoch - start) / max(1, end - start)
        return low + (top - low) * 0.5 * (1 + math.cos(math.pi * progress))

