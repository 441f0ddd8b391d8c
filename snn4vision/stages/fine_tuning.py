"""Stage 3: fine-tune the converted SNN over doubling timesteps (``pipelines/fine_tune.py``).

Spiking-aware training (spikes forward, ReLU gradient backward, as
keras-spiking does) at T_n = 1, 2, 4, ..., 2^E with E = floor(log2 T). Stage
``n`` multiplies the batch size, the learning rate and the number of epochs
by ``2^(E - n)``: batch x T stays constant, and every stage costs about the
same compute.

The ``snn4space`` recipe (:data:`RECIPES`) is SNN4Space's
``train_spiking_models.py``: the SNN is converted at dt = 1 s, where its
0.1 s filters are transparent and a neuron fires many spikes per step, so
stage T = 1 starts near the ANN; dt and tau are then trained with the
weights (RMSprop) down to a floor of 1 ms, enforced after every optimizer
step. ``dt_decay="geometric"`` adds a ceiling on dt that falls geometrically
from the start dt to the floor over every stage but the last, so that the
last stage trains at the floor whatever way the gradient pushes dt, and
``tau_min`` caps the taus on a path that falls with dt. SNN4Space's L2 rate
regulariser on a 10-20 Hz band is available (``rate_l2``) but off.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import data, resources, rundir
from ..checkpoints import EpochCheckpointer, atomic_write_json, save_variables
from ..errors import UserError, check_keras
from ..evaluation import diverging, firing_rates, layer_spikes, readout_accuracy, readout_steps, simulate_split
from ..progress import BatchProgress

from ..rundir import FINE_TUNE, FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS, SNN_CONFIG, SNN_WEIGHTS, load_snn, open_run


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
    optimizer: str = "adam"  # or "rmsprop" (SNN4Space's)
    dt_min: float | None = None  # with train_dt: the floor of dt, enforced after every optimizer step
    dt_decay: str = "none"  # with train_dt: "geometric" caps dt on a geometric path from its start to dt_min
    # with dt_min: the synaptic time constant at dt_min; tau's ceiling follows dt from (dt_start, tau_start) to
    # (dt_min, tau_min) on a straight line in log-log, so the filters keep pace with the shrinking step
    tau_min: float | None = None
    rate_l2: float = 0.0  # keras-spiking's L2 regulariser of each neuron's rate outside rate_band (0: off)
    recipe: str | None = None  # the recipe whose defaults this config took ("snn4space"), for the record

    def validate(self) -> None:
        resources.check_timesteps(self.timesteps)
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise UserError("--epochs and --batch-size must be at least 1 and --learning-rate positive")
        if not 0 <= self.rate_band[0] < self.rate_band[1]:
            raise UserError(f"--rate-band must be LOW HIGH with 0 <= LOW < HIGH, got {list(self.rate_band)}")
        if not (self.sparsity >= 0 and math.isfinite(self.sparsity)):
            raise UserError(f"--sparsity must be 0 (off) or positive, got {self.sparsity}")
        if not (self.rate_l2 >= 0 and math.isfinite(self.rate_l2)):
            raise UserError(f"--rate-l2 must be 0 (off) or positive, got {self.rate_l2}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.dt_decay not in DT_DECAYS:
            raise UserError(f"--dt-decay must be one of {', '.join(DT_DECAYS)}, got {self.dt_decay!r}")
        if self.dt_min is not None and not self.dt_min > 0:
            raise UserError(f"--dt-min must be positive, got {self.dt_min}")
        if (self.dt_min is not None or self.dt_decay != "none") and not self.train_dt:
            raise UserError("--dt-min and --dt-decay shape a trained dt: add --train-dt")
        if self.dt_decay != "none" and self.dt_min is None:
            raise UserError("--dt-decay needs the dt to decay to: add --dt-min (SNN4Space: 0.001)")
        if self.tau_min is not None and not (self.tau_min > 0 and self.dt_min is not None):
            raise UserError(f"--tau-min must be positive and comes with --dt-min, got {self.tau_min}")

    def check_snn(self, dt: float, tau: float | None, neuron: str) -> None:
        """Refuse an SNN this schedule cannot train: a floor above its dt, or a rate regulariser on IF neurons."""
        if self.dt_min is not None and dt < self.dt_min:
            raise UserError(f"the SNN's dt ({dt:g} s) is already below --dt-min ({self.dt_min:g} s): convert "
                            f"again with a larger --dt (as the snn4space recipe does: --dt 1 --tau 0.1 --max-rate "
                            f"{4 / self.dt_min:g})")
        if self.dt_decay != "none" and dt <= self.dt_min:
            what = f"the {self.recipe} recipe" if self.recipe else f"--dt-decay {self.dt_decay}"
            raise UserError(f"{what} starts from an SNN converted at a dt above {self.dt_min:g} s, but this one "
                            f"was converted at {dt:g} s: run convert_snn.py --dt 1 --tau 0.1 --max-rate "
                            f"{4 / self.dt_min:g} --overwrite first")
        if self.tau_min is not None and tau is None:
            raise UserError("--tau-min shapes the synaptic filters, but this SNN has none: convert with "
                            "--synapse lowpass")
        if neuron != "keras_spiking" and (self.rate_l2 or self.train_dt or self.train_tau):
            raise UserError("--rate-l2, --train-dt and --train-tau apply to the low-pass (keras-spiking) SNN of a "
                            "ReLU ANN; this run's SNN has integrate-and-fire (QCFS) neurons")


#: Optimizers of the fine-tuning stages.
OPTIMIZERS = ("adam", "rmsprop")
#: How a trained dt is driven to its floor: by the gradient alone, or under a falling geometric ceiling too.
DT_DECAYS = ("none", "geometric")
#: Named fine-tuning recipes: defaults that explicit flags override.
RECIPES = {
    # SNN4Space's train_spiking_models.py: target T 32, batch 16, 16 epochs, RMSprop, dt trained from the
    # conversion's 1 s down to 1 ms, trainable tau. Changed: learning rate 3e-6, not 3e-5 (at T = 32 the first
    # stage gets 32x, and 9.6e-4 took the loss from 0.01 to 50 in three batches); taus capped on a path to 1 ms
    # (at 0.1 s, 13 filters in series do not settle within 32 steps of 1 ms); no rate regulariser (its 10-20 Hz
    # band suits SNN4Space's unnormalised ~1 Hz rates: on rates normalised to 1000 Hz it silenced the network)
    "snn4space": dict(timesteps=32, epochs=16, batch_size=16, learning_rate=3e-6, optimizer="rmsprop",
                      train_tau=True, train_dt=True, dt_min=1e-3, dt_decay="geometric", tau_min=1e-3, rate_l2=0.0,
                      rate_band=(10.0, 20.0), readout_fraction=0.5),
}


def dt_ceiling(config: FineTuneConfig, dt_start: float, stage: int, progress: float) -> float:
    """The largest dt allowed at ``progress`` (0 to 1) through stage ``stage``; the start dt without a decay.

    ``"geometric"``: ``dt_start * (dt_min / dt_start) ** f``, where ``f`` is the fraction of the stages
    before the last one done, so that dt reaches the floor when the last stage starts (or, with one stage,
    when it ends).
    """
    if config.dt_decay == "none":
        return dt_start
    decaying = max(1, len(schedule(config)) - 1)
    fraction = min(1.0, (stage + progress) / decaying)
    return dt_start * (config.dt_min / dt_start) ** fraction


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


def _open_snn(config: FineTuneConfig, run_dir: Path, resume: bool, overwrite: bool):
    """The run and its converted SNN set up for fine-tuning, with the stages of :func:`schedule`, once the run's
    files, the memory and the disk allow it: ``(run, snn, stages)``."""
    import tensorflow as tf

    rundir.require(run_dir, rundir.CONFIG, SNN_CONFIG, SNN_WEIGHTS)
    if resume and not (run_dir / rundir.CHECKPOINTS / "fine_tune").exists():
        raise UserError(f"nothing to resume in {run_dir}: no fine-tuning checkpoint; run without --resume")
    outputs = [FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS, FINE_TUNE]
    logs = [f"{rundir.CHECKPOINTS}/fine_tune", f"{rundir.TENSORBOARD}/fine_tune"]  # kept for --resume
    rundir.prepare_new(run_dir, outputs + logs if not resume else outputs, resume, overwrite, stage="fine_tune")
    tf.keras.utils.set_random_seed(config.seed)
    run = open_run(run_dir, config.data_dir)
    snn = load_snn(run_dir, train_tau=config.train_tau, train_dt=config.train_dt)
    config.check_snn(snn.dt, snn.tau, snn.neuron)
    snn.rate_band, snn.rate_weight, snn.sparsity = tuple(config.rate_band), config.rate_weight, config.sparsity
    snn.rate_l2 = config.rate_l2
    stages = schedule(config)
    # every stage has the same timesteps x batch size, so the last one stands for all
    resources.check_memory(
        resources.spiking_network_training_bytes(sum(snn.neurons_per_layer()), stages[-1]["batch_size"],
                                             stages[-1]["timesteps"]),
        f"fine-tuning at T = {stages[-1]['timesteps']} with batches of {stages[-1]['batch_size']}",
        "lower --batch-size or --timesteps")
    parameters = sum(int(np.prod(w.shape)) for w in snn.weights)
    resources.check_disk(run_dir, resources.stage_disk_bytes(parameters, 5), "fine-tuning")
    return run, snn, stages


def _train_epoch(snn, config: FineTuneConfig, run, stage: dict, n: int, epoch: int, train, images: int,
                 dt_start: float, verbose: bool) -> dict:
    """One epoch of stage ``n`` on the decoded ``train`` split (``images`` of them); its Keras history, or one
    :class:`UserError` if the loss diverged (nothing is committed then: the last checkpoint stays)."""
    batches = data.training_batches(train, stage["batch_size"], config.seed, 1000 * n + epoch,
                                    data.augmentation(run.config.augment), run.config.transform)
    steps = math.ceil(images / stage["batch_size"])
    label = f"T={stage['timesteps']} epoch {epoch + 1}/{stage['epochs']}"
    callbacks = [BatchProgress(label, steps)] if verbose else []
    if config.dt_min is not None:  # validate() made sure dt is trained
        callbacks.append(_dt_bounds(snn, config, dt_start, n, epoch, stage["epochs"], steps))
    history = snn.fit(batches, epochs=1, verbose=0, callbacks=callbacks).history
    if diverging(len(run.classes), history["loss"][0]):
        raise UserError(f"fine-tuning diverged at T={stage['timesteps']}, epoch {epoch + 1} (loss "
                        f"{history['loss'][0]}): run again with --overwrite and a lower --learning-rate "
                        f"(now {config.learning_rate:g})")
    return history


def _log_epoch(snn, writer, step: int, stage: dict, epoch: int, history: dict, trace: list) -> None:
    """The epoch's dt, mean tau and loss onto ``trace`` and, with its accuracy, into TensorBoard."""
    import tensorflow as tf

    dt_now = float(snn.dt_weight.numpy())
    trace.append({"timesteps": stage["timesteps"], "epoch": epoch + 1, "dt": dt_now,
                  "tau_mean": _mean_tau(snn), "loss": history["loss"][0]})
    with writer.as_default(step=step):
        tf.summary.scalar("loss", history["loss"][0])
        tf.summary.scalar("accuracy", history["accuracy"][0])
        tf.summary.scalar("timesteps", stage["timesteps"])
        tf.summary.scalar("dt", dt_now)
        if snn.taus:
            tf.summary.scalar("tau_mean", trace[-1]["tau_mean"])


def _write_fine_tuned(run_dir: Path, run, snn, config: FineTuneConfig, stages: list, record: dict) -> dict:
    """The fine-tuned SNN at the last stage's T, with its trained dt, and ``fine_tune.json`` (``record``: the
    results, dt at the start, trace and wall time)."""
    snn.timesteps = stages[-1]["timesteps"]
    snn.dt = float(snn.dt_weight.numpy())  # the config records the (possibly trained) step length
    snn.readout_steps = readout_steps(snn.timesteps, config.readout_fraction)
    atomic_write_json(run_dir / FINE_TUNED_CONFIG, snn.get_config())
    save_variables(snn.weights, run_dir / FINE_TUNED_WEIGHTS)
    report = {"config": _as_json(config), "stages": stages,
              "results": record["results"], "dt_start": record["dt_start"], "dt_final": snn.dt,
              "trace": record["trace"], "wall_time_s": record["wall_time_s"]}
    if run.per_step:
        report["input"] = "event recordings, binned into each stage's T frames, one per step"
    atomic_write_json(run_dir / FINE_TUNE, report)
    rundir.record_outputs(run_dir, "fine_tune", [FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS, FINE_TUNE],
                          [SNN_CONFIG, SNN_WEIGHTS, rundir.CONFIG, rundir.SPLIT])
    return report


def _as_json(config: FineTuneConfig) -> dict:
    """``config`` as JSON writes it (``fine_tune.json``'s record)."""
    return dataclasses.asdict(config) | {"rate_band": list(config.rate_band)}


def _settings(config: FineTuneConfig) -> dict:
    """The schedule's settings as saved with each epoch's checkpoint (not where the run or its data lie)."""
    return {k: v for k, v in _as_json(config).items() if k not in ("run_dir", "data_dir")}


def _started_with(config: FineTuneConfig, run_dir: Path, verbose: bool) -> FineTuneConfig:
    """The config a resumed fine-tuning started with, saved in its checkpoint: a resume goes on with the same
    schedule, model and optimizer whatever flags it is given (as a resumed training does), so that a checkpoint
    of another configuration is never restored into this one. Checkpoints older than that keep the given flags."""
    checkpointer = EpochCheckpointer(run_dir / rundir.CHECKPOINTS / "fine_tune")
    saved = checkpointer.committed().get("config") if checkpointer.exists() else None
    if saved is None:
        return config
    started = FineTuneConfig(**(saved | {"rate_band": tuple(saved["rate_band"])}), run_dir=config.run_dir,
                             data_dir=config.data_dir)
    if started != config and verbose:
        print("resuming with the settings this fine-tuning started with (its checkpoint's), not the flags given")
    return started


def _fine_tune(config: FineTuneConfig, resume: bool, overwrite: bool, verbose: bool) -> dict:
    import tensorflow as tf

    check_keras()
    run_dir = Path(config.run_dir)
    if resume:
        config = _started_with(config, run_dir, verbose)
    config.validate()
    run, snn, stages = _open_snn(config, run_dir, resume, overwrite)
    dt_start = snn.dt  # the conversion's; a resumed run restores the trained dt from its checkpoint
    optimizer = (tf.keras.optimizers.RMSprop if config.optimizer == "rmsprop" else tf.keras.optimizers.Adam)(
        config.learning_rate)
    optimizer.build(snn.trainable_variables)
    checkpointer = EpochCheckpointer(run_dir / rundir.CHECKPOINTS / "fine_tune", model=snn, optimizer=optimizer)
    state = (checkpointer.restore() if resume else None) or {}
    done = state.get("done", [])  # finished epochs as [stage, epoch]
    results = state.get("results", [])
    trace = state.get("trace", [])  # per epoch: dt, mean tau, loss
    in_order = [[n, epoch] for n, stage in enumerate(stages) for epoch in range(stage["epochs"])]
    if done != in_order[:len(done)]:
        # a checkpoint from before settings were saved with it, resumed with other flags: going on would train the
        # restored SNN on another schedule (its dt already at the floor, at T = 1) and overwrite the checkpoint
        planned = ", ".join(f"T={s['timesteps']} x{s['epochs']}" for s in stages)
        raise UserError(f"the fine-tuning checkpoint in {run_dir} was written with another schedule ({len(done)} "
                        f"epochs done do not fit this one's {planned} epochs): resume with the flags it was "
                        "started with, or start it again with --overwrite")
    if state and verbose:
        print(f"resuming fine-tuning after {len(done)} epoch(s)")
    train_indices = run.sample("train", config.max_train_images, config.seed)
    # an event run's SNN trains and is tested on the recordings binned into each stage's T frames, one per step;
    # other runs' images are decoded once (their batches cache them for every stage)
    decoded_train = None if run.per_step else data.decoded_dataset(run.source, train_indices, run.config.image_size)
    test_batches = None if run.per_step else run.batches("test", 64)
    labels = run.labels("test")
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
        stage_train, stage_test = decoded_train, test_batches
        if run.per_step:
            stage_train = run.source.decoded(train_indices, run.config.image_size, steps=stage["timesteps"])
            stage_test = run.step_batches("test", 64, stage["timesteps"])
        for epoch in range(stage["epochs"]):
            if [n, epoch] in done:
                continue
            history = _train_epoch(snn, config, run, stage, n, epoch, stage_train, len(train_indices), dt_start,
                                   verbose)
            done.append([n, epoch])
            _log_epoch(snn, writer, step, stage, epoch, history, trace)
            if epoch == stage["epochs"] - 1:
                results.append(_evaluate_stage(snn, stage_test, labels, stage, config, writer, step))
                if verbose:
                    r = results[-1]
                    print(f"T={stage['timesteps']}: train loss {history['loss'][0]:.4f}, test accuracy "
                          f"{r['accuracy']:.4f}, {r['spikes_per_image']:.0f} spikes/image", flush=True)
            checkpointer.save(step, {"config": _settings(config), "done": done, "results": results,
                                     "trace": trace})
            step += 1
    return _write_fine_tuned(run_dir, run, snn, config, stages, {
        "results": results, "dt_start": dt_start, "trace": trace, "wall_time_s": time.perf_counter() - began})


def _mean_tau(snn) -> float | None:
    """The mean synaptic time constant over every neuron (None: no synapse)."""
    if not snn.taus:
        return None
    sizes = [int(np.prod(t.shape)) for t in snn.taus]
    return float(sum(float(np.sum(t.numpy())) for t in snn.taus) / sum(sizes))


def tau_ceiling(config: FineTuneConfig, dt_start: float, tau_start: float, dt: float) -> float:
    """The largest synaptic time constant at step length ``dt``: ``tau_start`` without ``tau_min``, else on the
    log-log line through ``(dt_start, tau_start)`` and ``(dt_min, tau_min)`` (so ``tau_min`` at the floor)."""
    if config.tau_min is None or dt_start <= config.dt_min:
        return tau_start
    slope = math.log(config.tau_min / tau_start) / math.log(config.dt_min / dt_start)
    return tau_start * (dt / dt_start) ** slope


def _dt_bounds(snn, config: FineTuneConfig, dt_start: float, stage: int, epoch: int, epochs: int, steps: int):
    """A callback that keeps a trained dt within ``[dt_min, dt_ceiling]``, and every tau at most
    :func:`tau_ceiling`, after every optimizer step (SNN4Space's DTStop clamps dt only at epoch starts, so dt
    could spend an epoch below the floor)."""
    import tensorflow as tf

    def bound(batch, logs=None):
        ceiling = dt_ceiling(config, dt_start, stage, (epoch + (batch + 1) / steps) / epochs)
        dt = float(np.clip(float(snn.dt_weight.numpy()), config.dt_min, max(ceiling, config.dt_min)))
        snn.dt_weight.assign(dt)
        if config.tau_min is not None:
            cap = tau_ceiling(config, dt_start, snn.tau, dt)
            for tau in snn.taus:
                tau.assign(tf.minimum(tau, cap))

    return tf.keras.callbacks.LambdaCallback(on_train_batch_end=bound)


def _evaluate_stage(snn, batches, labels, stage, config, writer, step) -> dict:
    import tensorflow as tf

    result = simulate_split(snn, batches, stage["timesteps"])
    accuracy = readout_accuracy(result["logits"], labels, readout_steps(stage["timesteps"], config.readout_fraction))
    spikes = layer_spikes(result["spikes"])
    rates = firing_rates(spikes, snn.neurons_per_layer(), stage["timesteps"], float(snn.dt_weight.numpy()))
    with writer.as_default(step=step):
        tf.summary.scalar("test_accuracy", accuracy)
        tf.summary.histogram("firing_rate_hz", np.asarray(rates))
        for i, rate in enumerate(rates):
            tf.summary.scalar(f"firing_rate_hz/layer_{i + 1}", rate)
    return {"timesteps": stage["timesteps"], "accuracy": accuracy, "spikes_per_image": float(spikes.sum()),
            "firing_rate_hz": rates}
