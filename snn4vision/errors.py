"""The one exception type for problems the user can fix."""
from __future__ import annotations

import errno


class UserError(Exception):
    """A problem with the user's input (path, flag, run directory, data).

    Pipeline scripts print it as one line and exit with status 2; it should
    name the problem and the fix.
    """


def check_keras() -> None:
    """Fail clearly if TensorFlow was set up with Keras 3 instead of tf-keras."""
    import tensorflow as tf

    # tf.keras.__name__ changes once keras-spiking is imported; the classes tell the truth.
    if not tf.keras.layers.Layer.__module__.startswith("tf_keras"):
        raise UserError(
            "TensorFlow is using Keras 3, but snn4vision needs Keras 2 (tf-keras): "
            "import snn4vision before tensorflow, or set TF_USE_LEGACY_KERAS=1"
        )


def write_failure(exc: OSError, path, fix: str) -> UserError:
    """One line for a write the file system refused (read-only place, no permission, full disk): names ``path``,
    the reason and ``fix``."""
    reason = exc.strerror or type(exc).__name__
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space or " + fix
    return UserError(f"cannot write {path} ({reason}): {fix}")
