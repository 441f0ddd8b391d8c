"""Stage 3: fine-tune the converted SNN over doubling timesteps (``pipelines/fine_tune.py``).

Spiking-aware training (spikes forward, ReLU gradient backward, as
keras-spiking does) at T_n = 1, 2, 4, ..., 2^E with E = floor(log2 T). Stage
``n`` multiplies the batch size, the learning rate and the number of epochs
by ``2^(E - n)``: batch x T stays constant, and every stage costs about the
same compute.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data, resources, rundir
from .checkpoints import EpochCheckpointer, atomic_write_json, save_variables
from .convert import SNN_CONFIG, SNN_WEIGHTS, load_snn, readout_steps
from .errors import UserError, check_keras
from .evaluation import diverging
from .progress import BatchProgress

from .rundir import FINE_TUNE, FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS


@dataclass
class FineTuneConfig:
    """The doubling-T fine-tuning schedule; batch, epochs and LR are those of the last stage."""

    run_dir: str
    timesteps: int = 8
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 1e-5  # at T = 1 it is 2^E x this: 8e-5 for T = 8 (8e-4 blew the loss up to 41 in one step)
    train_tau: bool = False
    train_dt: bool = False
    rate_band: tuple = (10.0, 20.0)  # Hz, on the filtered rates
    rate_weight: float = 0.0  # 0: no firing-rate regularisation
    sparsity: float = 0.0  # weight of the measured synaptic operations per ANN MAC in the loss (0: off)
    readout_fraction: float = 0.5
    max_train_images: int | None = None
    seed: int = 0
    data_dir: str | None = None

    def validate(self) -> None:
        resources.check_timesteps(self.timesteps)
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise UserError("--epochs and --batch-size must be at least 1 and --learning-rate positive")
        if not 0 <= self.rate_band[0] < self.rate_band[1]:
            raise UserError(f"--rate-band must be LOW HIGH with 0 <= LOW < HIGH, got {list(self.rate_band)}")
        if not (self.sparsity >= 0 and math.isfinite(self.sparsity)):
            raise UserError(f"--sparsity must be 0 (off) or positive, got {self.sparsity}")


def schedule(config: FineTuneConfig) -> list:
    """The stages: ``[{"timesteps", "batch_size", "learning_rate", "epochs"}, ...]``."""
    last = int(math.log2(config.timesteps))
    return [{"timesteps": 2 ** n, "batch_size": config.batch_size * 2 ** (last - n),
             "learning_rate": config.learning_rate * 2 ** (last - n), "epochs": config.epochs * 2 ** (last - n)}
            for n in range(last + 1)]


def fine_tune(config: FineTuneConfig, resume: bool = False, overwrite: bool = False, verbose: bool = True) -> dict:
    """Fine-tune the run's converted SNN; writes ``fine_tuned.*`` and ``fine_tune.json``."""
    with rundir.locked(Path(config.run_dir), create=False), rundir.replacing(Path(config.run_dir)):
        return _fine_tune(config, resume, overwrite, verbose)


def _fine_tune(config: FineTuneConfig, resume: bool, overwrite: bool, verbose: bool) -> dict:
    import tensorflow as tf

    from .training import open_run

    check_keras()
    config.validate()
    run_dir = Path(config.run_dir)
    rundir.require(run_dir, rundir.CONFIG, SNN_CONFIG, SNN_WEIGHTS)
    ckpt_dir = run_dir / rundir.CHECKPOINTS / "fine_tune"
    outputs = [FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS, FINE_TUNE]
    if resume and not ckpt_dir.exists():
        raise UserError(f"nothing to resume in {run_dir}: no fine-tuning checkpoint; run without --resume")
    logs = [f"{rundir.CHECKPOINTS}/fine_tune", f"{rundir.TENSORBOARD}/fine_tune"]  # kept for --resume
    rundir.prepare_new(run_dir, outputs + logs if not resume else outputs, resume, overwrite, stage="fine_tune")
    tf.keras.utils.set_random_seed(config.seed)
    run = open_run(run_dir, config.data_dir)
    snn = load_snn(run_dir, train_tau=config.train_tau, train_dt=config.train_dt)
    snn.rate_band, snn.rate_weight, snn.sparsity = tuple(config.rate_band), config.rate_weight, config.sparsity
    stages = schedule(config)
    # every stage has the same timesteps x batch size, so the last one stands for all
    resources.check_memory(
        resources.spiking_vgg_training_bytes(sum(snn.neurons_per_layer()), stages[-1]["batch_size"],
                                             stages[-1]["timesteps"]),
        f"fine-tuning at T = {stages[-1]['timesteps']} with batches of {stages[-1]['batch_size']}",
        "lower --batch-size or --timesteps")
    parameters = sum(int(np.prod(w.shape)) for w in snn.weights)
    resources.check_disk(run_dir, resources.stage_disk_bytes(parameters, 5), "fine-tuning")
    optimizer = tf.keras.optimizers.Adam(config.learning_rate)
    optimizer.build(snn.trainable_variables)
    checkpointer = EpochCheckpointer(ckpt_dir, model=snn, optimizer=optimizer)
    state = checkpointer.restore() if resume else None
    done = state["done"] if state else []  # finished epochs as [stage, epoch]
    results = state["results"] if state else []
    if state and verbose:
        print(f"resuming fine-tuning after {len(done)} epoch(s)")
    train_indices = run.sample("train", config.max_train_images, config.seed)
    decoded_train = data.decoded_dataset(run.source, train_indices, run.config.image_size)
    labels = run.labels("test")
    augmentation = data.augmentation(run.config.augment)
    writer = tf.summary.create_file_writer(str(run_dir / rundir.TENSORBOARD / "fine_tune"))
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    began = time.perf_counter()
    step = len(done)
    for n, stage in enumerate(stages):
        if len(done) and [n, stage["epochs"] - 1] in done:
            continue
        snn.timesteps = stage["timesteps"]
        snn.readout_steps = readout_steps(stage["timesteps"], config.readout_fraction)
        optimizer.learning_rate.assign(stage["learning_rate"])
        snn.compile(optimizer, loss, ["accuracy"])  # a new train function for this T
        for epoch in range(stage["epochs"]):
            if [n, epoch] in done:
                continue
            batches = data.training_batches(decoded_train, stage["batch_size"], config.seed, 1000 * n + epoch,
                                            augmentation, run.transform)
            label = f"T={stage['timesteps']} epoch {epoch + 1}/{stage['epochs']}"
            callbacks = [BatchProgress(label, math.ceil(len(train_indices) / stage["batch_size"]))] if verbose else []
            history = snn.fit(batches, epochs=1, verbose=0, callbacks=callbacks).history
            if diverging(len(run.classes), history["loss"][0]):  # not committed: the last checkpoint stays
                raise UserError(f"fine-tuning diverged at T={stage['timesteps']}, epoch {epoch + 1} (loss "
                                f"{history['loss'][0]}): run again with --overwrite and a lower --learning-rate "
                                f"(now {config.learning_rate:g})")
            done.append([n, epoch])
            with writer.as_default(step=step):
                tf.summary.scalar("loss", history["loss"][0])
                tf.summary.scalar("accuracy", history["accuracy"][0])
                tf.summary.scalar("timesteps", stage["timesteps"])
            if epoch == stage["epochs"] - 1:
                results.append(_evaluate_stage(snn, run.batches("test", 64), labels, stage, config, writer, step))
                if verbose:
                    r = results[-1]
                    print(f"T={stage['timesteps']}: train loss {history['loss'][0]:.4f}, test accuracy "
                          f"{r['accuracy']:.4f}, {r['spikes_per_image']:.0f} spikes/image", flush=True)
            checkpointer.save(step, {"done": done, "results": results})
            step += 1
    snn.timesteps = stages[-1]["timesteps"]
    snn.dt = float(snn.dt_weight.numpy())  # the config records the (possibly trained) step length
    snn.readout_steps = readout_steps(snn.timesteps, config.readout_fraction)
    atomic_write_json(run_dir / FINE_TUNED_CONFIG, snn.get_config())
    save_variables(snn.weights, run_dir / FINE_TUNED_WEIGHTS)
    report = {"config": dataclasses.asdict(config) | {"rate_band": list(config.rate_band)}, "stages": stages,
              "results": results, "wall_time_s": time.perf_counter() - began}
    atomic_write_json(run_dir / FINE_TUNE, report)
    rundir.record_outputs(run_dir, "fine_tune", [FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS, FINE_TUNE],
                          [SNN_CONFIG, SNN_WEIGHTS, rundir.CONFIG, rundir.SPLIT])
    return report


def _evaluate_stage(snn, batches, labels, stage, config, writer, step) -> dict:
    import tensorflow as tf

    from .convert import firing_rates, layer_spikes, readout_accuracy, simulate_split

    result = simulate_split(snn, batches, stage["timesteps"])
    accuracy = readout_accuracy(result["logits"], labels, readout_steps(stage["timesteps"], config.readout_fraction))
    spikes = layer_spikes(result["spikes"])
    rates = firing_rates(spikes, snn.neurons_per_layer(), stage["timesteps"], snn.dt)
    with writer.as_default(step=step):
        tf.summary.scalar("test_accuracy", accuracy)
        tf.summary.histogram("firing_rate_hz", np.asarray(rates))
        for i, rate in enumerate(rates):
            tf.summary.scalar(f"firing_rate_hz/layer_{i + 1}", rate)
    return {"timesteps": stage["timesteps"], "accuracy": accuracy, "spikes_per_image": float(spikes.sum()),
            "firing_rate_hz": rates}


def load_fine_tuned(run_dir: Path, timesteps: int | None = None):
    """The fine-tuned SNN of a run."""
    return load_snn(run_dir, timesteps, FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS)
