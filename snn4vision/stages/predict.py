"""Predict the class of image files with a run's ANN or SNN (``pipelines/predict.py``)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from .. import bands, data, events, resources, rundir
from ..checkpoints import read_json
from ..errors import UserError
from ..progress import Progress
from ..rundir import TrainConfig, load_ann, load_fine_tuned, load_snn, load_trained
from ..simulation import readout
from ..transformers import total_spikes

#: Images simulated at once (as the evaluation's batches): a long prediction reports progress between them.
BATCH = 32
#: Seconds between progress lines (on stderr: stdout holds the predictions).
PROGRESS_INTERVAL = 10.0


def in_batches(run, images: np.ndarray, label: str) -> list:
    """``run(batch) -> (logits, spikes)`` over ``images`` in batches of :data:`BATCH`, concatenated; a progress
    line every :data:`PROGRESS_INTERVAL` seconds (an SNN at a large T takes minutes)."""
    progress = Progress(label, math.ceil(len(images) / BATCH), PROGRESS_INTERVAL, sys.stderr)
    parts = []
    for start in range(0, len(images), BATCH):
        parts.append(run(images[start:start + BATCH]))
        progress.update(len(parts), "batches")
    progress.close()
    return [np.concatenate(column) for column in zip(*parts)]


def _simulate(snn, batch: np.ndarray) -> tuple:
    result = snn.simulate(batch, snn.timesteps)
    return readout(result["logits"], snn.readout_steps).numpy(), result["spikes"].numpy().sum(axis=(1, 2))


def _transformer(model, batch: np.ndarray) -> tuple:
    logits, entries = model.activity(batch)
    return np.asarray(logits), np.asarray(total_spikes(entries))


def predict(run_dir: str | Path, images: list, model: str = "ann", timesteps: int | None = None) -> list:
    """Per image: ``{"image", "class", "probability"}`` and, for an SNN, ``"spikes"``.

    ``images``: image files; for a run on multi-band images, TIFFs with the same bands as its training images;
    for a run on event recordings, event files (binned as its training recordings).
    ``model``: ``ann``, ``snn`` (converted) or ``fine-tuned``; ignored for a
    run of ``train_spiking_transformer.py``, whose model is the SNN.
    """
    import tensorflow as tf

    run_dir = Path(run_dir)
    rundir.require(run_dir, rundir.CONFIG, rundir.CLASSES)
    if timesteps is not None:
        resources.check_timesteps(timesteps)
    config = TrainConfig.from_json(read_json(run_dir / rundir.CONFIG))
    classes = read_json(run_dir / rundir.CLASSES)
    if not images:
        raise UserError("no images given: pass one or more image files")
    plan = bands.plan_of(config)
    if config.events:  # an event run: each recording binned as its training recordings were
        steps = (timesteps or config.transformer.timesteps) if config.spiking else None
        batch = np.stack([events.load_file(path, config, config.image_size, steps) for path in images])
    elif any(Path(path).suffix.lower() in events.EVENT_EXTENSIONS for path in images):
        first = next(p for p in images if Path(p).suffix.lower() in events.EVENT_EXTENSIONS)
        raise UserError(f"{first} is an event file, but the run was trained on images: give image files, or train "
                        "a run on a folder of event recordings")
    elif plan is not None:  # a multi-band run: its bands, normalised with its training split's statistics
        batch = np.stack([bands.load_file(path, plan, config.image_size) for path in images])
    else:
        batch = np.stack([data.load_image_file(path, config.image_size) for path in images]).astype(np.float32) / 255.0
    if config.transform is not None:  # the inputs the run was trained on
        batch = config.transform(batch).numpy()
    spikes = None
    if config.spiking:  # a directly trained spiking transformer: it is the only model of the run
        config.check_transformer_memory(min(len(batch), BATCH), training=False, timesteps=timesteps)
        model = load_trained(run_dir, config, len(classes), timesteps)
        logits, spikes = in_batches(lambda x: _transformer(model, x), batch, f"predicting {len(batch)} images")
    elif model == "ann":
        logits = load_ann(run_dir, config, len(classes))(batch).numpy()
    elif model in ("snn", "fine-tuned"):
        snn = load_snn(run_dir, timesteps) if model == "snn" else load_fine_tuned(run_dir, timesteps)
        if config.events:  # one frame per step, as energy_estimation.py presents them
            batch = np.stack([events.load_file(path, config, config.image_size, snn.timesteps) for path in images])
        logits, spikes = in_batches(lambda x: _simulate(snn, x), batch,
                                    f"predicting {len(batch)} images, T = {snn.timesteps}")
    else:
        raise UserError(f"unknown model {model!r}: use ann, snn or fine-tuned")
    probabilities = tf.nn.softmax(logits).numpy()
    rows = []
    for i, path in enumerate(images):
        label = int(probabilities[i].argmax())
        row = {"image": str(path), "class": classes[label], "probability": float(probabilities[i, label])}
        if spikes is not None:
            row["spikes"] = int(spikes[i])
        rows.append(row)
    return rows
