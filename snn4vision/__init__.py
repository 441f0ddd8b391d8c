"""snn4vision: convert Keras vision networks into spiking neural networks.

Importing the package selects Keras 2 (``tf-keras``) for TensorFlow, which
keras-spiking requires. It must therefore be imported before TensorFlow; if
TensorFlow was imported first with Keras 3, :func:`snn4vision.errors.check_keras`
raises a clear error on first use.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
