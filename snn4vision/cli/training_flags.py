"""The flags of the training commands (``train_ann.py``, ``train_spiking_transformer.py``, ``run_all.py``), the
flag types every command shares, and the configs the flags make."""
from __future__ import annotations

import argparse
from typing import Sequence

from .. import data, edges
from ..pipeline import PATHS, SNN4SPACE_MAX_RATE, SUMMARY_DEVICES, PipelineConfig
from ..rundir import ANN_ARCHITECTURES, OPTIMIZERS, PRESETS, TRANSFORMER_PRESETS, TrainConfig
from ..errors import UserError


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def layer_level(text: str) -> tuple[str, int]:
    """``LAYER=L`` (a QCFS layer's name and its levels) as ``(LAYER, L)``."""
    name, _, value = text.partition("=")
    if not name or not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAYER=L: give a QCFS layer's name and a whole number "
                                         "of levels of at least 1, e.g. block2_qcfs1=4")
    return name, int(value)


def layer_levels(pairs: list, flag: str = "--layer-levels") -> dict:
    """``{LAYER: L}`` from :func:`layer_level` pairs, refusing a layer given twice (a dict would keep the last)."""
    names = [name for name, _ in pairs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(f"{flag} gives {', '.join(twice)} more than once: give each layer once")
    return dict(pairs)


def add_run_flags(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--run", dest="run_dir", required=required, metavar="RUN_DIR",
                        help="run directory shared by all stages")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run of this stage")
    parser.add_argument("--overwrite", action="store_true", help="replace this stage's earlier outputs")


def training_parser(prog: str, description: str, presets: dict, preset_help: str) -> argparse.ArgumentParser:
    """The flags every training stage shares: run, preset, data, split, seed, augmentation, image size."""
    parser = argparse.ArgumentParser(prog=prog, description=description + " Flags left out take the preset's "
                                                                          "value (default preset: quick).")
    add_run_flags(parser)
    parser.add_argument("--preset", choices=sorted(presets), default="quick", help=preset_help)
    parser.add_argument("--dataset", default="uc_merced",
                        help="eurosat, uc_merced (TensorFlow Datasets) or the path of a folder <class>/<image>")
    parser.add_argument("--data-dir", help="TFDS data folder, or a local copy of the dataset as <class>/<image>")
    parser.add_argument("--seed", type=int, default=0,
                        help="controls split, shuffling, augmentation and initial weights")
    parser.add_argument("--split", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=(0.8, 0.1, 0.1))
    parser.add_argument("--bands", metavar="LIST",
                        help="multi-band images (a folder of multi-band TIFFs, or --dataset eurosat_all): the bands "
                             "to use, in order, by number from 1 or by name (4,3,2,8 or B04,B03,B02,B08; default: "
                             "all); each is normalised with the training split's statistics")
    parser.add_argument("--event-binning", choices=("time", "count", "accumulated"),
                        help="a folder of event recordings: bin each recording into the model's frames by equal time "
                             "windows (time, the default) or equal event counts (count), or give a spiking network "
                             "the accumulated frame at every step (accumulated: the frame-based control)")
    parser.add_argument("--sensor-size", type=positive_int, nargs=2, metavar=("WIDTH", "HEIGHT"),
                        help="a folder of event recordings whose files do not store their sensor size (.npy, .h5 "
                             "without the attribute): the sensor's width and height in pixels")
    parser.add_argument("--event-duration-us", type=positive_int, metavar="US",
                        help="a folder of event recordings: use each recording's first US microseconds (default: "
                             "from its first event to its last)")
    parser.add_argument("--folds", type=non_negative_int, default=0, metavar="K",
                        help="stratified K-fold cross-validation: the test split is fold --fold of K (each image is "
                             "tested once over the K runs) and --split's TRAIN:VAL proportion divides the rest "
                             "(default 0: off; benchmarks/cross_validation.py runs and gathers the folds)")
    parser.add_argument("--fold", type=non_negative_int, default=0, metavar="I", help="with --folds: 0 .. K-1")
    parser.add_argument("--augment", choices=tuple(data.AUGMENTATIONS),
                        help="training augmentation: snn4space (geometry and colour jitter), geometric "
                             "(zoom, pad-and-crop, flips, 90-degree rotations), crops (random resized crops of "
                             "35-100 %% of the image, flips, 90-degree rotations), events (geometric, and events "
                             "dropped by pixel and by time) or none")
    parser.add_argument("--image-size", type=positive_int, help="images are resized to this square size")
    parser.add_argument("--input-transform", choices=("none", "prewitt", "sobel"), default=None,
                        help="edge-filter input (SNN4Space's): each channel's Prewitt or Sobel gradient magnitude, "
                             "after augmentation; every later stage applies it too (default none; also set by a "
                             "dataset name such as ucm_prewitt_sq_mask)")
    parser.add_argument("--squared", action="store_true", help="with --input-transform: square the edge map (sq)")
    parser.add_argument("--mask", action="store_true",
                        help="with --input-transform: keep the original pixels where the edge map is nonzero")
    parser.add_argument("--init-from", metavar="RUN_DIR",
                        help="transfer learning: start from this finished run's weights (every weight of the same "
                             "name and shape; a new head when the classes differ)")
    parser.add_argument("--freeze-backbone", type=non_negative_int, default=0, metavar="EPOCHS",
                        help="with --init-from: keep the copied backbone fixed for the first EPOCHS epochs "
                             "(default 0)")
    parser.add_argument("--backbone-lr-factor", type=positive_float, default=1.0, metavar="F",
                        help="with --init-from: train the backbone at F times the learning rate (default 1)")
    return parser


def input_transform(args: argparse.Namespace) -> tuple[str, str]:
    """``(dataset, transform name)`` from ``--dataset`` (SNN4Space's grammar) and the transform flags."""
    dataset, named = edges.split_dataset_name(args.dataset)
    if named == "none":
        return dataset, edges.transform_name(args.input_transform, args.squared, args.mask)
    if args.input_transform is not None or args.squared or args.mask:
        flagged = edges.transform_name(args.input_transform or edges.parse(named).kind, args.squared, args.mask)
        if flagged != named:
            raise UserError(f"--dataset {args.dataset} already selects the input transform {named}, but the "
                            f"flags ask for {flagged}: give one of the two")
    return dataset, named


def _given(args: argparse.Namespace, names: tuple) -> dict:
    """The flags every training stage shares, and those of ``names`` that were given."""
    dataset, transform = input_transform(args)
    return dict(run_dir=args.run_dir, dataset=dataset, data_dir=args.data_dir, seed=args.seed,
                split=tuple(args.split), folds=args.folds, fold=args.fold, input_transform=transform,
                bands=getattr(args, "bands", None),
                event_binning=getattr(args, "event_binning", None),
                event_duration_us=getattr(args, "event_duration_us", None),
                event_sensor_size=getattr(args, "sensor_size", None),
                init_from=args.init_from,
                freeze_backbone=args.freeze_backbone, backbone_lr_factor=args.backbone_lr_factor,
                **{name: getattr(args, name) for name in names if getattr(args, name) is not None})


def train_ann_parser() -> argparse.ArgumentParser:

    p = training_parser("train_ann.py", "Train the ANN to convert (stage 1): the SNN4Space VGG-16, ResNet-18 or "
                        "ResNet-20.", PRESETS,
                        "quick: 64x64, width 0.25, BatchNorm, cosine over 130 epochs, from scratch; full: width 0.5, "
                        "160 epochs; paper: SNN4Space's 224x224 ImageNet-pretrained VGG-16")
    p.add_argument("--architecture", choices=ANN_ARCHITECTURES, default="vgg16",
                   help="vgg16 (SNN4Space), resnet18 (3x3 stem for small images) or resnet20 (CIFAR)")
    p.add_argument("--width", type=positive_float, help="channel width multiplier (1.0 is the full network)")
    p.add_argument("--batch-norm", dest="batch_norm", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm after each conv (folded into the conv at conversion)")
    p.add_argument("--pool-before-activation", dest="pool_before_activation",
                   action=argparse.BooleanOptionalAction, default=None,
                   help="vgg16: pool each block's last conv before its activation, not after (4x fewer neurons "
                        "and synaptic operations there in the SNN, and less accuracy; default off)")
    p.add_argument("--pool-levels", dest="pool_levels", type=int, default=None,
                   help="vgg16 with --activation qcfs: a QCFS activation of P levels after each block's pooling, "
                        "so that the SNN's next block reads a quarter as many neurons' spikes (0: none)")
    p.add_argument("--pre-pool-levels", dest="pre_pool_levels", type=int, default=None,
                   help="with --pool-levels: the QCFS levels of the activations each pooling reads (0: --levels); "
                        "their spikes reach the pooling only, so more levels there cost few synaptic operations")
    p.add_argument("--layer-levels", dest="layer_levels", nargs="+", type=layer_level, metavar="LAYER=L",
                   help="--activation qcfs: other levels for the QCFS layers named, over --levels, --pre-pool-levels "
                        "and --pool-levels (e.g. block2_qcfs1=4; benchmarks/quantisation_switch.py shows which "
                        "layers lose most accuracy to quantising, and what their spikes cost)")
    p.add_argument("--weights", help="none, imagenet, or the path of an .h5 weights file of this architecture")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--learning-rate", type=positive_float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--activation", choices=("relu", "qcfs"), default="relu",
                   help="qcfs: quantisation-clip-floor-shift activation (converts almost losslessly at T = levels)")
    p.add_argument("--levels", type=positive_int, help="QCFS quantisation levels L (4 or 8 typical)")
    p.add_argument("--label-smoothing", type=float, help="label smoothing of the cross-entropy (0: off)")
    p.add_argument("--sparsity", type=float,
                   help="weight of the converted SNN's expected synaptic operations per ANN MAC in the loss "
                        "(0: off; QCFS: quick preset 2, full 1; ReLU: 0)")
    p.add_argument("--lr-schedule", choices=("cosine", "plateau"),
                   help="cosine: warm-up, then cosine decay over all epochs (no early stopping); plateau: "
                        "reduce on plateau and early stopping")
    p.add_argument("--qcfs-warmup", type=float,
                   help="QCFS: train this fraction of the epochs as ReLU, then quantise (each threshold where it "
                        "reproduces the layer's activations best); 0: QCFS from the start")
    p.add_argument("--qcfs-restart", type=float,
                   help="QCFS with a ReLU warm-up, cosine schedule: the warm-up's cosine decays to the minimum "
                        "rate by its last epoch, and the quantised epochs restart a cosine at this fraction of "
                        "--learning-rate (default 0: one cosine over all the epochs)")
    p.add_argument("--distill", type=float,
                   help="QCFS with a ReLU warm-up: weight in [0, 1) of a distillation term from the warm-up's ReLU "
                        "network (frozen at the switch) in the loss of the quantised epochs (0: off)")
    p.add_argument("--distill-temperature", type=float,
                   help="--distill: temperature of the softened logits (default 4)")
    p.add_argument("--qcfs-threshold", dest="qcfs_threshold", type=positive_float, default=None,
                   help="initial QCFS threshold lambda (trainable; default 2.0: BatchNorm makes the pre-activations "
                        "about unit-variance, and the paper's 8.0 leaves most of them in the zero level)")
    return p


def train_config(args: argparse.Namespace):
    """A TrainConfig from parsed flags: the preset, overridden by explicit flags."""

    given = _given(args, ("image_size", "width", "batch_norm", "weights", "batch_size", "epochs", "learning_rate",
                          "optimizer", "augment", "qcfs_threshold", "label_smoothing", "lr_schedule", "qcfs_warmup",
                          "qcfs_restart", "levels", "sparsity", "pool_before_activation", "pool_levels", "distill",
                          "distill_temperature", "pre_pool_levels"))
    if args.layer_levels:
        given["layer_levels"] = layer_levels(args.layer_levels)
    return TrainConfig.from_preset(args.preset, **given, activation=args.activation, architecture=args.architecture)


def run_all_parser() -> argparse.ArgumentParser:

    p = train_ann_parser()
    p.prog = "run_all.py"
    p.description = ("Train the ANN, convert it to a spiking network, fine-tune it where the path needs it, "
                     "estimate its energy and print one summary (summary.json and summary.md in RUN_DIR). "
                     "Flags left out take the preset's value (default preset: quick).")
    p.add_argument("--path", choices=PATHS, default="qcfs",
                   help="qcfs: QCFS ANN to signed IF neurons, lossless at T = L (default); relu: ReLU ANN to "
                        "keras-spiking neurons without a synapse, 4 spikes per step, then fine-tuned; snn4space: "
                        "SNN4Space's path, a ReLU ANN converted with 0.1 s low-pass filters at dt 1 s (--max-rate) "
                        "and fine-tuned with --recipe snn4space (dt trained down to 1 ms) up to --timesteps (32 in "
                        "SNN4Space)")
    p.add_argument("--timesteps", type=positive_int, default=8, help="largest T at which the SNN is evaluated")
    p.add_argument("--energy-timesteps", type=positive_int,
                   help="T of the energy estimate (default: 1 on the qcfs path, where each neuron fires its QCFS "
                        "level in one burst; --timesteps on the relu path)")
    p.add_argument("--devices", nargs="+", default=list(SUMMARY_DEVICES), help="device profiles of the summary")
    p.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the conversion's variants")
    p.add_argument("--max-rate", type=positive_float,
                   help="relu and snn4space paths: the conversion's rate in Hz at the 99.9th percentile of each "
                        "layer (default: relu 4 spikes per step; snn4space %g, where SNN4Space's own 4000 doubles "
                        "the spikes)" % SNN4SPACE_MAX_RATE)
    p.set_defaults(activation=None)
    return p


#: run_all.py's own flags and the PipelineConfig setting each sets; the others set TrainConfig fields
_PIPELINE_SETTINGS = {"path": "path", "timesteps": "max_timesteps", "energy_timesteps": "timesteps",
                      "devices": "devices", "sweep": "sweep", "max_rate": "max_rate"}
#: flags that set a TrainConfig field of another name
_TRAIN_SETTINGS = {"input_transform": "input_transform", "squared": "input_transform", "mask": "input_transform"}


def run_all_config(args: argparse.Namespace, given: set | None = None):
    """The PipelineConfig of parsed flags; ``given``: the flags (dests) on the command line, which a --resume
    checks against the run's recorded settings."""
    if args.activation is None:
        args.activation = "qcfs" if args.path == "qcfs" else "relu"
    config = PipelineConfig(train_config(args), path=args.path, max_timesteps=args.timesteps,
                            timesteps=args.energy_timesteps, devices=tuple(args.devices), sweep=args.sweep,
                            max_rate=args.max_rate)
    flags = {action.dest: action.option_strings[0] for action in run_all_parser()._actions if action.option_strings}
    for dest in sorted(given or ()):
        if dest in _PIPELINE_SETTINGS:
            config.given[_PIPELINE_SETTINGS[dest]] = flags[dest]
        elif hasattr(config.train, _TRAIN_SETTINGS.get(dest, dest)) and dest != "run_dir":
            config.given[f"train.{_TRAIN_SETTINGS.get(dest, dest)}"] = flags[dest]
    return config


def explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set:
    """The dests of the flags that ``argv`` gives (not left to their defaults); ``parser`` is spent."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # a flag left out then leaves no attribute
    # a parser-level default (run_all's activation=None) is None: no flag given parses to None
    return {dest for dest, value in vars(parser.parse_args(argv)).items() if value is not None}


def train_spiking_transformer_parser() -> argparse.ArgumentParser:

    p = training_parser("train_spiking_transformer.py",
                        "Train a Spikformer or Spike-driven Transformer directly with surrogate gradients, on the "
                        "same datasets, splits and run directory format as train_ann.py.", TRANSFORMER_PRESETS,
                        "quick: 64x64, 2 blocks, dim 256, T 4, pooling 0111 (8x8 tokens), 12 epochs; "
                        "reference: the reference code's recipe")
    p.add_argument("--model", choices=("spikformer", "sdt"), default="spikformer",
                   help="spikformer (Zhou et al. 2023) or sdt (Spike-driven Transformer, Yao et al. 2023)")
    p.add_argument("--depth", type=positive_int, help="transformer blocks")
    p.add_argument("--dim", type=positive_int, help="embedding dimension (a multiple of 8 and of --heads)")
    p.add_argument("--heads", type=positive_int)
    p.add_argument("--timesteps", type=positive_int, help="T: the image is presented for T steps")
    p.add_argument("--mlp-ratio", type=positive_int)
    p.add_argument("--pooling", help="four 0/1 flags: max pooling after each patch-splitting stage")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--learning-rate", type=positive_float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=int)
    return p


def transformer_config(args: argparse.Namespace):
    """A TrainConfig for a spiking transformer: the preset, overridden by explicit flags."""

    return TrainConfig.from_transformer_preset(
        args.preset, architecture=args.model,
        **_given(args, ("image_size", "depth", "dim", "heads", "timesteps", "mlp_ratio", "pooling", "batch_size",
                        "epochs", "learning_rate", "weight_decay", "warmup_epochs", "augment")))
