"""Benchmark: training and inference images/s of Spikformer and the Spike-driven Transformer, and the LIF loop's share.

Usage: python benchmarks/spiking_transformer.py [--image-size 64] [--batch-size 32] [--steps 3]

Builds the quick preset of train_spiking_transformer.py (2 blocks, dim 256, 8 heads, T = 4, pooling 0111) on
random images and times, in one run and on the same machine:
- ours: the LIF recurrence statically unrolled over T, vectorised over batch and features;
- baseline "keras RNN LIF": the same neuron through Keras' generic RNN loop (``tf.keras.backend.rnn``), the way a
  Keras user would write a stateful neuron;
- "stateless threshold": every LIF replaced by a memoryless surrogate threshold, so that
  1 - ours / stateless is the time share of the LIF loop;
- Spikformer only: the attention in the reference order, (Q K^T) V, instead of our Q (K^T V) (same values).
Results go to benchmarks/results/spiking_transformer.{json,md}.
"""
import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import snn4vision  # noqa: E402,F401

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from snn4vision import layers, models  # noqa: E402
from snn4vision.layers import LIF  # noqa: E402
from snn4vision.neurons import sigmoid_surrogate_spike  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def rnn_lif_call(self, inputs):
    """The same LIF through Keras' generic RNN loop (a while_loop over time)."""
    x = tf.cast(inputs, tf.float32)
    shape = tf.shape(x)
    flat = tf.reshape(x, [shape[0], shape[1], -1])

    def step(current, states):
        h = states[0] + (current - states[0]) / self.tau
        spikes = sigmoid_surrogate_spike(h - self.threshold, self.alpha)
        return spikes, [h * (1.0 - tf.stop_gradient(spikes))]

    _, outputs, _ = tf.keras.backend.rnn(step, flat, [tf.zeros_like(flat[:, 0])])
    return tf.reshape(outputs, shape)


def stateless_call(self, inputs):
    """No recurrence: a memoryless surrogate threshold (for the LIF loop's time share)."""
    return sigmoid_surrogate_spike(tf.cast(inputs, tf.float32) - self.threshold, self.alpha)


def reference_order_attention(q, k, v):
    return tf.einsum("bthnm,btmhe->btnhe", tf.einsum("btnhd,btmhd->bthnm", q, k), v)


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def measure(kind, args, variant):
    tf.keras.utils.set_random_seed(0)
    build = models.spikformer if kind == "spikformer" else models.spike_driven_transformer
    model = build(21, 2, 256, 8, 4, args.image_size, 4, "0111")
    optimizer = tf.keras.optimizers.AdamW(1e-3, weight_decay=0.01)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((args.batch_size, args.image_size, args.image_size, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 21, args.batch_size))

    @tf.function
    def infer(x):
        return model(x, training=False)

    @tf.function
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    result = {}
    for name, fn, fn_args in (("inference", infer, (images,)), ("training", train, (images, labels))):
        fn(*fn_args)  # trace and warm up
        times = []
        for _ in range(args.steps):
            began = time.perf_counter()
            np.asarray(fn(*fn_args))
            times.append(time.perf_counter() - began)
        result[f"{name}_images_per_s"] = args.batch_size / min(times)
    print(f"{kind:>10} {variant:<22} inference {result['inference_images_per_s']:7.1f} img/s, "
          f"training {result['training_images_per_s']:6.1f} img/s", flush=True)
    return result


VARIANTS = {
    "ours": lambda: contextlib.nullcontext(),
    "keras RNN LIF": lambda: patched(LIF, "call", rnn_lif_call),
    "stateless threshold": lambda: patched(LIF, "call", stateless_call),
    "reference-order attention": lambda: patched(layers, "_attention_product", reference_order_attention),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed repetitions (the best is kept)")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")  # each variant traces its own tf.functions on purpose
    measure("spikformer", argparse.Namespace(**(vars(args) | {"steps": 1})), "warm-up (discarded)")
    rows = []
    for kind in ("spikformer", "sdt"):
        for variant, context in VARIANTS.items():
            if variant == "reference-order attention" and kind != "spikformer":
                continue
            with context():
                rows.append({"model": kind, "variant": variant} | measure(kind, args, variant))
    for row in rows:
        ours = next(r for r in rows if r["model"] == row["model"] and r["variant"] == "ours")
        for key in ("inference", "training"):
            row[f"ours_speedup_{key}"] = ours[f"{key}_images_per_s"] / row[f"{key}_images_per_s"]
    shares = {}
    for kind in ("spikformer", "sdt"):
        ours = next(r for r in rows if r["model"] == kind and r["variant"] == "ours")
        free = next(r for r in rows if r["model"] == kind and r["variant"] == "stateless threshold")
        shares[kind] = {key: 1 - ours[f"{key}_images_per_s"] / free[f"{key}_images_per_s"]
                        for key in ("inference", "training")}
    report = {"config": vars(args) | {"depth": 2, "dim": 256, "heads": 8, "timesteps": 4, "pooling": "0111"},
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__},
              "rows": rows, "lif_time_share": shares}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spiking_transformer.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Spiking transformers at T = 4, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
             f"{os.cpu_count()} CPU cores", "",
             "| model | variant | inference img/s | training img/s | ours / variant (inference, training) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['inference_images_per_s']:.1f} | "
                     f"{r['training_images_per_s']:.1f} | {r['ours_speedup_inference']:.2f}x, "
                     f"{r['ours_speedup_training']:.2f}x |")
    lines += ["", "LIF loop time share (1 - ours / stateless threshold): " +
              "; ".join(f"{k}: inference {v['inference']:.0%}, training {v['training']:.0%}"
                        for k, v in shares.items())]
    (RESULTS / "spiking_transformer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
