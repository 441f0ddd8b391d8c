"""Stage 1: train the ANN to convert (``pipelines/train_ann.py``) or a spiking transformer."""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import data, distributed, events, resources, rundir
from ..checkpoints import EpochCheckpointer, atomic_save_weights, atomic_write_json, load_weights, read_json
from ..errors import UserError, check_keras
from ..evaluation import classification_metrics, diverging, quantisation_record
from ..losses import classification_loss, distillation_loss, label_accuracy, with_teacher
from ..progress import BatchProgress
from ..quantisation import add_sparsity_penalty, qcfs_layers, start_quantising
from ..rundir import RunData, TrainConfig, build_model, weights_file
from ..optimisation import PlateauSchedule, make_optimizer
from ..transfer import backbone_variables, transfer_weights
from ..transformers import firing_rates, measure, total_spikes

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


def _checked_config(config: TrainConfig, resume: bool, overwrite: bool, strategy,
                    cluster: distributed.Cluster) -> TrainConfig:
    """The configuration to train with (a resumed run's own, saved in it), once the run directory, the flags,
    the cluster and the memory allow it."""
    run_dir = Path(config.run_dir)
    saved = TrainConfig.from_json(read_json(run_dir / rundir.CONFIG)) if (run_dir / rundir.CONFIG).is_file() else None
    if saved is not None and saved.spiking != config.spiking and not overwrite:
        # Never point at --overwrite here: it would delete the other kind of network.
        script = "train_spiking_transformer.py" if saved.spiking else "train_ann.py"
        action = f"resume it with pipelines/{script} --resume" if resume else "choose another --run directory"
        raise UserError(f"{run_dir} holds a {saved.architecture} run of pipelines/{script}: {action}")
    if resume:
        if saved is None:
            shared = "" if cluster.is_chief else (" (every worker must see the chief's run directory at the same "
                                                  "path, on a shared filesystem)")
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
                        "train with --distill 0 (the quick preset distils QCFS networks) or without TF_CONFIG")
    if config.spiking:
        config.check_transformer_memory(config.batch_size // strategy.num_replicas_in_sync, training=True)
    else:
        config.check_ann_memory(config.batch_size // strategy.num_replicas_in_sync)
    return config


def _compiled_model(config: TrainConfig, classes: list, strategy, cluster: distributed.Cluster, committed: bool,
                    verbose: bool):
    """The model and its optimizer, compiled with the run's loss (and the sparsity penalty); a transfer copies
    the source run's weights unless a committed checkpoint will restore them."""
    transferring = config.init_from is not None
    with strategy.scope():
        model = build_model(config, len(classes))
        if cluster.multi_worker:
            distributed.synchronise_batch_norm(model)
    # outside the scope: the source run's model is read on each worker alone
    if transferring and not committed:  # a committed checkpoint holds the weights, config.json the layers
        config.transfer = transfer_weights(model, config.init_from, classes).to_json()
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
            model.compile(optimizer, distillation_loss(len(classes), config.distill, config.distill_temperature,
                                                       config.label_smoothing), [label_accuracy(len(classes))])
        else:
            model.compile(optimizer, classification_loss(len(classes), config.label_smoothing), ["accuracy"])
        optimizer.build(model.trainable_variables)
    return model, optimizer


def _train_model(config: TrainConfig, resume: bool, overwrite: bool, verbose: bool, strategy,
                 cluster: distributed.Cluster) -> dict | None:
    import tensorflow as tf

    check_keras()
    run_dir = Path(config.run_dir)
    chief = cluster.is_chief
    config = _checked_config(config, resume, overwrite, strategy, cluster)
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

    checkpoints = run_dir / rundir.CHECKPOINTS / stage_name(config)
    committed = resume and (checkpoints / EpochCheckpointer.STATE).is_file()
    model, optimizer = _compiled_model(config, source.classes, strategy, cluster, committed, verbose)
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
    schedule = PlateauSchedule(config, state["schedule"] if state else None)
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


def switch_calibration(run: RunData):
    """The training images whose activations give each QCFS layer its threshold at the end of the ReLU warm-up:
    256 of them, drawn with the run's seed, in batches of 64."""
    return (x for x, _ in run.batches("train", 64, count=256, seed=run.config.seed))


def _start_epoch(config: TrainConfig, run: RunData, model, optimizer, epoch: int, teacher, checkpoints: Path,
                 verbose: bool):
    """What changes at the start of ``epoch``: the scheduled learning rate, a frozen backbone's factor, and at
    the end of the ReLU warm-up the QCFS thresholds (and ``--distill``'s teacher, saved as the ReLU network left
    it); returns the teacher."""
    scheduled = config.learning_rate_at(epoch)
    if scheduled is not None:
        optimizer.learning_rate.assign(scheduled)
    if config.init_from is not None:
        optimizer.backbone_factor.assign(0.0 if epoch < config.freeze_backbone else config.backbone_lr_factor)
    if config.qcfs_from_epoch > 0 and epoch == config.qcfs_from_epoch:
        images = switch_calibration(run)
        if config.distill:  # before quantising: the teacher is the ReLU network
            teacher = relu_teacher(config, model, len(run.source.classes), checkpoints, save=True)
        thresholds = start_quantising(model, images, seed=config.seed)
        if verbose:
            print(f"epoch {epoch + 1}: ReLU warm-up over, QCFS thresholds of least quantisation error: "
                  + " ".join(f"{t:.2f}" for t in thresholds), flush=True)
    return teacher


def _record_epoch(config: TrainConfig, model, optimizer, writer, probe, epoch: int, fit: dict, val: tuple,
                  seconds: float, verbose: bool) -> dict:
    """The epoch's entry of ``metrics.json``'s history, also written to TensorBoard and printed."""
    import tensorflow as tf

    val_loss, val_accuracy = val
    entry = {"epoch": epoch + 1, "loss": fit["loss"][0], "accuracy": fit["accuracy"][0],
             "val_loss": val_loss, "val_accuracy": val_accuracy,
             "learning_rate": float(optimizer.learning_rate.numpy()), "seconds": seconds}
    if probe is not None:
        entry["mean_firing_rate"] = _log_firing_rates(model, probe, writer, epoch + 1)
    with writer.as_default(step=epoch + 1):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
            tf.summary.scalar(key, entry[key])
    if verbose:
        print(f"epoch {epoch + 1}/{config.epochs}: loss {entry['loss']:.4f} acc {entry['accuracy']:.4f} "
              f"val_loss {val_loss:.4f} val_acc {val_accuracy:.4f} ({seconds:.1f} s)", flush=True)
    return entry


def _write_metrics(config: TrainConfig, run: RunData, checkpointer: EpochCheckpointer, training: dict,
                   verbose: bool) -> dict:
    """The best weights saved as the run's model, and ``metrics.json``: their metrics on every split (and the test
    activity of a spiking transformer) with ``training``'s record. Evaluated on a copy outside any strategy: the
    other workers have finished."""
    run_dir = Path(config.run_dir)
    best = build_model(config, len(run.source.classes), weights="none")
    load_weights(best, checkpointer.best_weights_path(checkpointer.committed()), what="best weights")
    atomic_save_weights(best, run_dir / weights_file(config))
    metrics = {split: _evaluate_split(best, run, split, config.batch_size) for split in data.SPLITS}
    if config.spiking:
        metrics |= _test_activity(best, run, config.batch_size)
    metrics |= training
    atomic_write_json(run_dir / rundir.METRICS, metrics)
    rundir.record_outputs(run_dir, "train_transformer" if config.spiking else "train",
                          [weights_file(config), rundir.CONFIG, rundir.CLASSES, rundir.SPLIT, rundir.METRICS], [])
    if verbose:
        print(f"test accuracy {metrics['test']['accuracy']:.4f} (best epoch {metrics['best_epoch']}, "
              f"{metrics['wall_time_s']:.0f} s training); wrote {run_dir}")
    return metrics


def _epoch_batches(config: TrainConfig, decoded_train, epoch: int, teacher, cluster: distributed.Cluster):
    """The epoch's shuffled, augmented training batches (with the teacher's logits under ``--distill``; one
    shard of each batch per worker)."""
    batches = data.training_batches(decoded_train, config.batch_size, config.seed, epoch,
                                    data.augmentation(config.augment), config.transform)
    if teacher is not None:
        batches = with_teacher(batches, teacher)
    if cluster.multi_worker:
        batches = distributed.shard_by_example(batches)
    return batches


def _epochs(config: TrainConfig, run: RunData, model, optimizer, checkpointer: EpochCheckpointer,
            schedule: PlateauSchedule, history: list, start: int, wall: float, verbose: bool, strategy,
            cluster: distributed.Cluster, state: dict | None) -> dict | None:
    """Train from epoch ``start``; the chief then evaluates the best weights and writes the run's outputs."""
    import tensorflow as tf

    run_dir, source = Path(config.run_dir), run.source
    chief = cluster.is_chief
    decoded_train = run.decoded("train")
    val_batches = run.batches("val", config.batch_size)
    if cluster.multi_worker:
        val_batches = distributed.shard_by_example(val_batches)
    writer = (tf.summary.create_file_writer(str(run_dir / rundir.TENSORBOARD / stage_name(config))) if chief
              else tf.summary.create_noop_writer())
    # a fixed batch for firing rates, measured on every worker alike (the model's layers may run collectives)
    probe = next(iter(val_batches))[0] if config.spiking else None
    stop = bool(state and state.get("stopped"))
    diverged = None
    warmup = config.qcfs_from_epoch > 0
    if warmup and start == 0:
        for layer in qcfs_layers(model):
            layer.quantising.assign(0.0)
    steps = math.ceil(len(run.manifest["train"]) / config.batch_size)
    checkpoints = run_dir / rundir.CHECKPOINTS / stage_name(config)
    teacher = (relu_teacher(config, model, len(source.classes), checkpoints, save=False)
               if config.distill and start > config.qcfs_from_epoch else None)
    with data.explain_bad_images(source, np.concatenate([run.indices(s) for s in data.SPLITS])):
        for epoch in range(start, config.epochs if not stop else start):
            began = time.perf_counter()
            teacher = _start_epoch(config, run, model, optimizer, epoch, teacher, checkpoints, verbose)
            callbacks = [BatchProgress(f"epoch {epoch + 1}/{config.epochs}", steps)] if verbose else []
            fit = model.fit(_epoch_batches(config, decoded_train, epoch, teacher, cluster), epochs=1, verbose=0,
                            callbacks=callbacks).history
            val_loss, val_accuracy = model.evaluate(val_batches, verbose=0)
            if diverging(len(source.classes), fit["loss"][0], val_loss):
                if not chief:  # the chief says what happened and keeps what can be kept
                    return None
                diverged = _divergence(epoch + 1, fit["loss"][0], val_loss, checkpointer, config)
                break
            seconds = time.perf_counter() - began
            wall += seconds
            history.append(_record_epoch(config, model, optimizer, writer, probe, epoch, fit,
                                         (val_loss, val_accuracy), seconds, verbose))
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
        quantisation = quantisation_record(history, config.qcfs_from_epoch, config.sparsity)
        if quantisation and quantisation["warning"]:
            data.warn(quantisation["warning"])
        return _write_metrics(config, run, checkpointer, {"best_epoch": schedule.state["best_epoch"],
                                                          "epochs_run": len(history), "wall_time_s": wall,
                                                          "history": history, "diverged_at_epoch": diverged,
                                                          "quantisation": quantisation},
                              verbose)
