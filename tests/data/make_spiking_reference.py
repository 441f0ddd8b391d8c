"""Writes tests/data/spiking_vgg_reference.npz: logits and spike counts of the VGG simulator as of commit 5ca3e5d
(SpikingVGG, before the layer-graph simulator replaced it), on fixed weights and six real UC Merced images, for
each neuron. Kept so that the values can be traced; the simulator it ran no longer exists."""
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from snn4vision import conversion, models, simulation  # noqa: E402

CASES = {  # name: (QCFS ANN?, SpikingVGG keyword arguments)
    "keras_spiking_tau": (False, dict(tau=0.01, dt=0.001)),
    "keras_spiking_no_synapse": (False, dict(tau=None, dt=0.001)),
    "if": (True, dict(tau=None, neuron="if")),
    "signed_if": (True, dict(tau=None, neuron="signed_if")),
    "signed_if_bursts": (True, dict(tau=None, neuron="signed_if", max_spikes=3)),
}


def reference_ann(qcfs: bool):
    model = models.vgg16(5, image_size=32, width=0.125, batch_norm=True, seed=1,
                         activation="qcfs" if qcfs else "relu", levels=4)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([g * rng.uniform(0.5, 1.5, g.shape), b + rng.normal(0, 0.1, b.shape),
                               m + rng.normal(0, 0.1, m.shape), v * rng.uniform(0.5, 2, v.shape)])
        if qcfs and hasattr(layer, "quantising"):
            layer.quantising.assign(1.0)
            layer.threshold.assign(float(rng.uniform(0.5, 2.0)))
    return model


def reference_images():
    root = ROOT.parent / "shared" / "data" / "ucmerced"
    paths = [sorted((root / c).iterdir())[0] for c in ("beach", "forest", "runway", "harbor", "river", "freeway")]
    images = [tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(str(p)), 3), (32, 32), antialias=True) / 255.0
              for p in paths]
    return tf.stack(images).numpy().astype(np.float32)


if __name__ == "__main__":
    images = reference_images()
    out = {"images": images}
    for name, (qcfs, kwargs) in CASES.items():
        net = conversion.fold_ann(reference_ann(qcfs))
        if not qcfs:
            net = conversion.normalise(net, conversion.activation_percentiles(net, [images]), 1000.0)
        snn = simulation.SpikingVGG.from_folded(net, 32, timesteps=6, seed=3, **kwargs)
        result = snn.simulate(images, 6)
        out[f"{name}_logits"] = result["logits"].numpy()
        out[f"{name}_spikes"] = result["spikes"].numpy()
        print(name, result["spikes"].numpy().sum(axis=(0, 1))[:4], result["logits"].numpy()[0, -1, :3])
    np.savez_compressed(Path(__file__).with_name("spiking_vgg_reference.npz"), **out)
