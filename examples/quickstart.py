"""Quickstart: a Keras model of your own to a spiking network, with its accuracy and its energy per inference.

    .venv/bin/python examples/quickstart.py [--data ../shared/data/ucmerced] [--epochs 8] [--qcfs --nir model.nir]

Trains a small CNN for a few epochs on four UC Merced classes at 32 x 32 pixels (your model and data go in their
place), converts it into a spiking network, and prints the SNN's test accuracy beside the ANN's and the energy of
both on three device profiles. With ``--qcfs`` the CNN uses QCFS activations, whose SNN (integrate-and-fire
neurons) matches the ANN in a few timesteps and can be written as NIR (``--nir``). docs/python_api.md explains it.
"""
import argparse
from pathlib import Path

import snn4vision  # first: it selects Keras 2 (tf-keras) for TensorFlow
from snn4vision.layers import QCFS

import numpy as np
import tensorflow as tf

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucmerced"
CLASSES = ["beach", "chaparral", "forest", "runway"]


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="a folder with one sub-folder of images per class")
    parser.add_argument("--images-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--timesteps", type=int, default=None, help="T (default 32; 4 with --qcfs)")
    parser.add_argument("--qcfs", action="store_true", help="QCFS activations instead of ReLU")
    parser.add_argument("--nir", type=Path, help="write the SNN as NIR here (with --qcfs)")
    return parser.parse_args(argv)


def load(folder: Path, per_class: int) -> tuple:
    """Your data: training and test images (pixels in [0, 1]) and class indices, 3 : 1, shuffled."""
    files = [(path, label) for label, name in enumerate(CLASSES) for path in sorted((folder / name).iterdir())[:per_class]]
    images = np.stack([tf.keras.utils.img_to_array(tf.keras.utils.load_img(path, target_size=(32, 32)))
                       for path, _ in files]) / 255.0
    labels = np.array([label for _, label in files])
    order = np.random.default_rng(0).permutation(len(files))
    train, test = order[: 3 * len(order) // 4], order[3 * len(order) // 4:]
    return images[train], labels[train], images[test], labels[test]


def main(argv=None) -> dict:
    args = parse(argv)
    tf.keras.utils.set_random_seed(0)
    train_images, train_labels, images, labels = load(args.data, args.images_per_class)

    # Your model: any Conv2D / Dense / pooling / BatchNorm / Add CNN with ReLU (or QCFS) activations.
    def activation():
        return QCFS(levels=4, initial_threshold=1.0) if args.qcfs else tf.keras.layers.ReLU()

    model = tf.keras.Sequential([
        tf.keras.Input((32, 32, 3)),
        tf.keras.layers.Conv2D(16, 3, padding="same"), activation(), tf.keras.layers.AveragePooling2D(),
        tf.keras.layers.Conv2D(32, 3, padding="same"), activation(), tf.keras.layers.AveragePooling2D(),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(len(CLASSES)),
    ])
    model.compile(tf.keras.optimizers.Adam(3e-3), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    model.fit(train_images, train_labels, epochs=args.epochs, verbose=0)
    ann_accuracy = model.evaluate(images, labels, verbose=0)[1]

    # The spiking network: converted, evaluated, costed, exported.
    snn = snn4vision.convert(model, train_images, timesteps=args.timesteps or (4 if args.qcfs else 32))
    result = snn.evaluate(images, labels)
    energy = snn4vision.estimate_energy(snn, images, devices=["loihi", "spinnaker2", "gpu"])
    print(f"ANN accuracy {ann_accuracy:.3f}; SNN accuracy {result['accuracy']:.3f} at T = {result['timesteps']}, "
          f"{result['spikes_per_image']:.0f} spikes per image")
    print(energy)
    if args.nir:
        snn.export_nir(args.nir, approximate=True)  # NIR's IF neurons fire single, unsigned spikes
        print(f"wrote {args.nir}")
    return {"ann_accuracy": ann_accuracy, "snn": result, "energy": energy}


if __name__ == "__main__":
    try:
        main()
    except snn4vision.UserError as error:  # a bad input is one line, not a traceback
        raise SystemExit(f"error: {error}")
