"""Synchronised BatchNorm: one step on two replicas of half a batch each equals one step on the whole batch."""
import json
import subprocess
import sys

import pytest

from .conftest import ROOT

# Two logical CPU devices must be configured before TensorFlow starts: a fresh process.
SCRIPT = """
import json
import numpy as np
import snn4vision
import tensorflow as tf
from snn4vision import distributed

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
images = np.random.default_rng(0).uniform(size=(8, 8, 8, 3)).astype("float32")
labels = np.arange(8) % 2

def network():
    tf.keras.utils.set_random_seed(1)
    x = inputs = tf.keras.Input((8, 8, 3))
    for i, stride in enumerate((1, 2, 4)):  # the last BatchNorm sees 1x1 maps
        x = tf.keras.layers.Conv2D(8, 3, stride, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = tf.keras.layers.ReLU()(tf.keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x))
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(2, name="logits")(x))

def step(strategy, synchronise):
    with strategy.scope():
        model = network()
        if synchronise:
            distributed.synchronise_batch_norm(model)
        model.compile(tf.keras.optimizers.SGD(0.5), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return {w.name: w.numpy() for w in model.weights if "bias" not in w.name}

one = step(tf.distribute.get_strategy(), False)
two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert two.num_replicas_in_sync == 2
difference = lambda other: {kind: max(float(np.abs(other[k] - one[k]).max()) for k in one if kind in k)
                            for kind in ("kernel", "gamma", "beta", "moving_mean", "moving_variance")}
print(json.dumps({"synchronised": difference(step(two, True)), "per_replica": difference(step(two, False))}))
"""


@pytest.mark.slow  # two worker processes that import TensorFlow: about 18 s
def test_synchronised_batch_norm_is_one_batch():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    synchronised, per_replica = found["synchronised"], found["per_replica"]
    for kind in ("kernel", "gamma", "beta", "moving_mean"):
        assert synchronised[kind] < 1e-5, (kind, synchronised)
        assert per_replica[kind] > 100 * max(synchronised[kind], 1e-7), (kind, per_replica)
    # one process's fused BatchNorm keeps n / (n - 1) x the batch variance for inference, the synchronised layer
    # the batch variance: n = 8 on the last 1x1 maps (0.1 x (8/7 - 1) x variance after one step)
    assert synchronised["moving_variance"] < 0.1 * (8 / 7 - 1) * 1.5
