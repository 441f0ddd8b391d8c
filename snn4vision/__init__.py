"""snn4vision: convert Keras vision networks into spiking neural networks.

Importing the package selects Keras 2 (``tf-keras``) for TensorFlow, which
keras-spiking requires. It must therefore be imported before TensorFlow; if
TensorFlow was imported first with Keras 3, :func:`snn4vision.errors.check_keras`
raises a clear error on first use.

The Python API (:mod:`snn4vision.api`): :func:`convert`, :func:`estimate_energy`,
:func:`export_nir`, and on the :class:`SpikingNetwork` they return ``evaluate`` and
``export_nir``. It loads on first use, so that ``import snn4vision`` stays light
and imports no TensorFlow.
"""
import importlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"

#: The names that snn4vision takes from snn4vision.api (loaded lazily, on first use).
API = ("convert", "estimate_energy", "export_nir", "ConversionOptions", "EnergyEstimate", "SpikingNetwork",
       "UserError")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:
        # importlib rather than an import statement: the import of TensorFlow waits for the first use of the API
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(API))

