"""Stage 1: train the ANN to convert (``pipelines/train_ann.py``) or a spiking transformer."""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from . import data, distributed, events, resources, rundir
from .checkpoints import EpochCheckpointer, atomic_save_weights, atomic_write_json, load_weights, read_json
from .errors import UserError, check_keras
from .evaluation import classification_metrics, diverging
from .losses import classification_loss, distillation_loss, label_accuracy, with_teacher
from .progress import BatchProgress
from .quantisation import add_sparsity_penalty, qcfs_layers, start_quantising
from .rundir import PRESETS, TRANSFORMER_PRESETS, RunData, TrainConfig, build_model, weights_file  # noqa: F401
from .transfer import backbone_variables, transfer_weights, with_backbone_rate
from .transformers import firing_rates, measure, total_spikes

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


def _test_activity(model, run: RunData, batch_size: int) -> dict:
    """Firing rates per layer (spikes per neuron per step) and spikes per image on the test split."""

    if not run.manifest["test"]:
        return {}
    layers = measure(model, run.batches("test", batch_size))["layers"]
    return {"firing_rates": firing_rates(layers), "spikes_per_image": float(total_spikes(layers))}


def _evaluate_split(model, run: RunData, split: str, batch_size: int) -> dict:
    if not run.manifest[split]:
        return {"accuracy": None, "loss": None, "num_images": 0}
    batches = run.batches(split, batch_size)
    logits = model.predict(batches, verbose=0)
    labels = run.labels(split)
    import tensorflow as tf

    loss = float(tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)))
    return classification_metrics(labels, logits.argmax(axis=1), run.classes) | {"loss": loss}


class _Schedule:
    """ReduceLROnPlateau on val_loss and EarlyStopping on val_accuracy, with JSON state."""

    def __init__(self, config: TrainConfig, state: dict | None = None):
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


TRAIN_OUTPUTS = [rundir.CONFIG, rundir.CLASSES, rundir.SPLIT, rundir.ANN_WEIGHTS, rundir.TRANSFORMER_WEIGHTS,
                 rundir.METRICS, rundir.CHECKPOINTS, rundir.TENSORBOARD]


def stage_name(config: TrainConfig) -> str:
    """Sub-folder of checkpoints/ and tensorboard/ of the training stage."""
    return config.architecture if config.spiking else "ann"


def train_ann(config: TrainConfig, resume: bool = False, overwrite: bool = False, verbose: bool = True) -> dict:
    """Train the ANN (VGG-16, ResNet-18 or ResNet-20) into ``config.run_dir`` and return its metrics.

    With ``resume``, continue the run in ``config.run_dir`` from its last
    completed epoch (same weights, optimizer state, schedule and data
    order), using the saved ``config.json``.
    """
    if config.spiking:
        raise UserError(f"train_ann trains ANNs; {config.architecture} is a spiking transformer: "
                        "use train_spiking_transformer.py")
    return train_model(config, resume, overwrite, verbose)


def train_spiking_transformer(config: TrainConfig, resume: bool = False, overwrite: bool = False,
                              verbose: bool = True) -> dict:
    """Train a Spikformer or Spike-driven Transformer directly (surrogate gradients) into ``config.run_dir``.

    Same run directory, split, checkpoints, ``--resume`` and metrics as
    :func:`train_ann`; the weights go to ``transformer.weights.h5`` and
    ``metrics.json`` adds the per-layer firing rates on the test split.
    """
    if not config.spiking:
        raise UserError(f"unknown spiking transformer {config.architecture!r}: use spikformer or sdt")
    return train_model(config, resume, overwrite, verbose)


TEACHER = "teacher.weights.h5"  # in the training stage's checkpoint folder (its cleaning keeps it)


def relu_teacher(config: TrainConfig, model, num_classes: int, checkpoints: Path, save: bool):
    """The teacher of ``--distill``: the QCFS network as its ReLU warm-up left it, frozen; ``save`` writes it
    (at the switch) so that a run resumed later distils from the same network, else it is read back."""
    teacher = build_model(config, num_classes, weights="none")
    path = checkpoints / TEACHER
    if save:
        teacher.set_weights(model.get_weights())  # quantising 0 included: called before start_quantising
        atomic_save_weights(teacher, path)
    else:
        if not path.is_file():
            raise UserError(f"{path} is missing, so this --distill run cannot resume from its ReLU teacher: train it "
                            "again with --overwrite")
        load_weights(teacher, path, what="distillation teacher")
    teacher.trainable = False
    return teacher


def _log_firing_rates(model, images, writer, step: int) -> float:
    """Per-layer firing rates of one fixed batch to TensorBoard; returns their mean."""
    import tensorflow as tf


    rates = firing_rates(measure(model, [(images, None)])["layers"])
    with writer.as_default(step=step):
        for name, rate in rates.items():
            tf.summary.scalar(f"firing_rate/{name}", rate)
        tf.summary.histogram("firing_rates", list(rates.values()))
    return float(np.mean(list(rates.values())))


def _divergence(epoch: int, loss: float, val_loss: float, checkpointer, config: TrainConfig) -> int:
    """Stop on a non-finite loss: with a finite best epoch committed, say so and keep it; else a UserError."""
    kept = checkpointer.committed().get("best_weights") if checkpointer.exists() else None
    if kept is None:
        raise UserError(f"training diverged in epoch {epoch} (loss {loss}, val_loss {val_loss}) before any epoch "
                        f"could be kept: lower --learning-rate (now {config.learning_rate:g}) and run again with "
                        "--overwrite")
    print(f"training diverged in epoch {epoch} (loss {loss}, val_loss {val_loss}): stopped; the best finite epoch's "
          f"weights are kept (lower --learning-rate, now {config.learning_rate:g}, to train further)", flush=True)
    return epoch


def train_model(config: TrainConfig, resume: bool = False, overwrite: bool = False, verbose: bool = True) -> dict:
    """The training loop shared by :func:`train_ann` and :func:`train_spiking_transformer`.

    When ``TF_CONFIG`` names several workers (:mod:`snn4vision.distributed`),
    every worker runs this with the same arguments; the chief alone locks and
    writes the run directory and returns the metrics, the others return None.
    """
    cluster = distributed.cluster_from_env()
    if not resume:  # bad flags are refused before waiting for the other workers
        config.validate()
        distributed.check_global_batch(config.batch_size, cluster.workers)
    strategy = distributed.make_strategy(cluster)  # before anything else runs: it configures the runtime
    try:
        if not cluster.is_chief:
            return _train_model(config, resume, overwrite, False, strategy, cluster)
        with rundir.locked(Path(config.run_dir), create=not resume), rundir.replacing(Path(config.run_dir)):
            return _train_model(config, resume, overwrite, verbose, strategy, cluster)
    except distributed.WORKER_FAILURES as exc:
        if not cluster.multi_worker:
            raise
        raise UserError(f"a worker of the {cluster.workers}-worker job failed or became unreachable "
                        f"({data.tf_error_text(exc)}): "
                        "start every worker again with the same command and --resume, which continues from the "
                        "last completed epoch") from None


def _train_model(config: TrainConfig, resume: bool, overwrite: bool, verbose: bool, strategy,
                 cluster: distributed.Cluster) -> dict | None:
    import tensorflow as tf

    check_keras()
    run_dir = Path(config.run_dir)
    chief = cluster.is_chief
    saved = TrainConfig.from_json(read_json(run_dir / rundir.CONFIG)) if (run_dir / rundir.CONFIG).is_file() else None
    if saved is not None and saved.spiking != config.spiking and not overwrite:
        # Never point at --overwrite here: it would delete the other kind of network.
        script = "train_spiking_transformer.py" if saved.spiking else "train_ann.py"
        action = f"resume it with pipelines/{script} --resume" if resume else "choose another --run directory"
        raise UserError(f"{run_dir} holds a {saved.architecture} run of pipelines/{script}: {action}")
    if resume:
        if saved is None:
            shared = "" if chief else (" (every worker must see the chief's run directory at the same path, on a "
                                       "shared filesystem)")
            raise UserError(f"nothing to resume in {run_dir} (no {rundir.CONFIG}){shared}: run without --resume")
        if (run_dir / rundir.METRICS).exists():
            raise UserError(f"the run in {run_dir} has already finished ({rundir.METRICS} exists): "
                            "pass --overwrite to train it again")
        saved.run_dir = config.run_dir
        config = saved
    config.validate()
    distributed.check_global_batch(config.batch_size, strategy.num_replicas_in_sync)
    if config.distill and cluster.multi_worker:
        raise UserError("--distill trains on one machine only for now (its teacher is not shared between workers): "
                        "drop --distill or TF_CONFIG")
    if config.spiking:
        config.check_transformer_memory(config.batch_size // strategy.num_replicas_in_sync, training=True)
    else:
        config.check_ann_memory(config.batch_size // strategy.num_replicas_in_sync)
    if chief:
        rundir.prepare_new(run_dir, TRAIN_OUTPUTS, resume, overwrite, stage="train")
    tf.keras.utils.set_random_seed(config.seed)

    source = events.open_source(config.dataset, config.data_dir, config.event_sensor_size)
    manifest = read_json(run_dir / rundir.SPLIT) if resume else events.split_manifest(
        source, config.split, config.seed, config.folds, config.fold)
    run = RunData(config, source, source.classes, manifest)
    data.check_cache_memory(sum(len(manifest[split]) for split in data.SPLITS), config.image_size)
    if not manifest["train"] or not manifest["val"]:
        raise UserError("the train or val split is empty: use more images per class or other --split fractions")

    transferring = config.init_from is not None
    checkpoints = run_dir / rundir.CHECKPOINTS / stage_name(config)
    committed = resume and (checkpoints / EpochCheckpointer.STATE).is_file()
    with strategy.scope():
        model = build_model(config, len(source.classes))
        if cluster.multi_worker:
            distributed.synchronise_batch_norm(model)
    # outside the scope: the source run's model is read on each worker alone
    if transferring and not committed:  # a committed checkpoint holds the weights, config.json the layers
        config.transfer = transfer_weights(model, config.init_from, source.classes).to_json()
        if verbose:
            skipped = ", ".join(config.transfer["skipped"]) or "none"
            print(f"copied {len(config.transfer['copied'])} layers ({config.transfer['copied_values']:,} values) "
                  f"from {config.init_from}; new or kept fresh: {skipped}", flush=True)
    with strategy.scope():
        optimizer = make_optimizer(config.optimizer, config.learning_rate, config.weight_decay,
                                   backbone_rate=transferring)
        if transferring:
            optimizer.set_backbone(backbone_variables(model, config.transfer["copied"]))
        if config.sparsity:
            add_sparsity_penalty(model, config.sparsity)
        if config.distill:
            model.compile(optimizer, distillation_loss(len(source.classes), config.distill, config.distill_temperature,
                                                       config.label_smoothing), [label_accuracy(len(source.classes))])
        else:
            model.compile(optimizer, classification_loss(len(source.classes), config.label_smoothing), ["accuracy"])
        optimizer.build(model.trainable_variables)
    # weights, two optimizer slots, the checkpoint's copy of all three and the best weights
    if chief:
        resources.check_disk(run_dir, resources.stage_disk_bytes(model.count_params(), 7), "training")
    state = EpochCheckpointer(checkpoints, model=model, optimizer=optimizer).restore() if committed else None
    if chief and not resume:  # only now that everything has been checked
        atomic_write_json(run_dir / rundir.SPLIT, manifest)
        atomic_write_json(run_dir / rundir.CLASSES, source.classes)
        atomic_write_json(run_dir / rundir.CONFIG, config.to_json())
    # the other workers save what the chief saves (saving may take part in collective ops), to a scratch folder
    scratch = None if chief else tempfile.TemporaryDirectory(prefix=f"snn4vision-worker{cluster.index}-")
    checkpointer = EpochCheckpointer(checkpoints if chief else Path(scratch.name), model=model, optimizer=optimizer)
    schedule = _Schedule(config, state["schedule"] if state else None)
    history = state["history"] if state else []
    start = state["step"] + 1 if state else 0
    wall = state["wall_time_s"] if state else 0.0
    if state:
        optimizer.learning_rate.assign(state["learning_rate"])
        if verbose:
            print(f"resuming {run_dir} after epoch {start} of {config.epochs}")
    try:
        return _epochs(config, run, model, optimizer, checkpointer, schedule, history, start, wall, verbose, strategy,
                       cluster, state)
    finally:
        if scratch is not None:
            scratch.cleanup()


def _epochs(config: TrainConfig, run: RunData, model, optimizer, checkpointer: EpochCheckpointer,
            schedule: _Schedule, history: list, start: int, wall: float, verbose: bool, strategy,
            cluster: distributed.Cluster, state: dict | None) -> dict | None:
    """Train from epoch ``start``; the chief then evaluates the best weights and writes the run's outputs."""
    import tensorflow as tf

    run_dir, manifest, source = Path(config.run_dir), run.manifest, run.source
    chief = cluster.is_chief
    decoded_train = run.decoded("train")
    augmentation = data.augmentation(config.augment)
    val_batches = run.batches("val", config.batch_size)
    if cluster.multi_worker:
        val_batches = distributed.shard_by_example(val_batches)
    writer = (tf.summary.create_file_writer(str(run_dir / rundir.TENSORBOARD / stage_name(config))) if chief
              else tf.summary.create_noop_writer())
    # a fixed batch for firing rates, measured on every worker alike (the model's layers may run collectives)
    probe = next(iter(val_batches))[0] if config.spiking else None
    all_indices = np.concatenate([run.indices(s) for s in data.SPLITS])
    stop = bool(state and state.get("stopped"))
    diverged = None
    warmup = config.qcfs_from_epoch > 0
    if warmup and start == 0:
        for layer in qcfs_layers(model):
            layer.quantising.assign(0.0)
    steps = math.ceil(len(manifest["train"]) / config.batch_size)
    checkpoints = run_dir / rundir.CHECKPOINTS / stage_name(config)
    teacher = (relu_teacher(config, model, len(source.classes), checkpoints, save=False)
               if config.distill and start > config.qcfs_from_epoch else None)
    with data.explain_bad_images(source, all_indices):
        for epoch in range(start, config.epochs if not stop else start):
            began = time.perf_counter()
            scheduled = config.learning_rate_at(epoch)
            if scheduled is not None:
                optimizer.learning_rate.assign(scheduled)
            if config.init_from is not None:
                optimizer.backbone_factor.assign(0.0 if epoch < config.freeze_backbone else config.backbone_lr_factor)
            if warmup and epoch == config.qcfs_from_epoch:
                images = (x for x, _ in run.batches("train", 64, count=256, seed=config.seed))
                if config.distill:  # before quantising: the teacher is the ReLU network
                    teacher = relu_teacher(config, model, len(source.classes), checkpoints, save=True)
                thresholds = start_quantising(model, images, seed=config.seed)
                if verbose:
                    print(f"epoch {epoch + 1}: ReLU warm-up over, QCFS thresholds of least quantisation error: "
                          + " ".join(f"{t:.2f}" for t in thresholds), flush=True)
            batches = data.training_batches(decoded_train, config.batch_size, config.seed, epoch, augmentation,
                                            config.transform)
            if teacher is not None:
                batches = with_teacher(batches, teacher)
            if cluster.multi_worker:
                batches = distributed.shard_by_example(batches)
            callbacks = [BatchProgress(f"epoch {epoch + 1}/{config.epochs}", steps)] if verbose else []
            fit = model.fit(batches, epochs=1, verbose=0, callbacks=callbacks).history
            val_loss, val_accuracy = model.evaluate(val_batches, verbose=0)
            if diverging(len(source.classes), fit["loss"][0], val_loss):
                if not chief:  # the chief says what happened and keeps what can be kept
                    return None
                diverged = _divergence(epoch + 1, fit["loss"][0], val_loss, checkpointer, config)
                break
            seconds = time.perf_counter() - began
            wall += seconds
            entry = {"epoch": epoch + 1, "loss": fit["loss"][0], "accuracy": fit["accuracy"][0],
                     "val_loss": val_loss, "val_accuracy": val_accuracy,
                     "learning_rate": float(optimizer.learning_rate.numpy()), "seconds": seconds}
            if probe is not None:
                entry["mean_firing_rate"] = _log_firing_rates(model, probe, writer, epoch + 1)
            history.append(entry)
            with writer.as_default(step=epoch + 1):
                for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
                    tf.summary.scalar(key, entry[key])
            if verbose:
                print(f"epoch {epoch + 1}/{config.epochs}: loss {entry['loss']:.4f} acc {entry['accuracy']:.4f} "
                      f"val_loss {val_loss:.4f} val_acc {val_accuracy:.4f} ({seconds:.1f} s)", flush=True)
            improved, stop = schedule.update(epoch + 1, val_loss, val_accuracy, optimizer,
                                             eligible=not warmup or epoch >= config.qcfs_from_epoch)
            checkpointer.save(epoch, {"schedule": schedule.state, "history": history, "wall_time_s": wall,
                                      "learning_rate": float(optimizer.learning_rate.numpy()), "stopped": stop},
                              best_weights_of=model if improved else None)
            if stop and verbose:
                print(f"early stopping: val_accuracy has not improved for {config.stop_patience} epochs")
            if stop:
                break
        if not chief:
            return None
        # evaluated on a copy outside the strategy: the other workers have finished
        best = build_model(config, len(source.classes), weights="none")
        load_weights(best, checkpointer.best_weights_path(checkpointer.committed()), what="best weights")
        atomic_save_weights(best, run_dir / weights_file(config))
        metrics = {split: _evaluate_split(best, run, split, config.batch_size) for split in data.SPLITS}
        if config.spiking:
            metrics |= _test_activity(best, run, config.batch_size)
    metrics |= {"best_epoch": schedule.state["best_epoch"], "epochs_run": len(history),
                "wall_time_s": wall, "history": history, "diverged_at_epoch": diverged}
    atomic_write_json(run_dir / rundir.METRICS, metrics)
    rundir.record_outputs(run_dir, "train_transformer" if config.spiking else "train",
                          [weights_file(config), rundir.CONFIG, rundir.CLASSES, rundir.SPLIT, rundir.METRICS], [])
    if verbose:
        print(f"test accuracy {metrics['test']['accuracy']:.4f} (best epoch {metrics['best_epoch']}, "
              f"{wall:.0f} s training); wrote {run_dir}")
    return metrics
