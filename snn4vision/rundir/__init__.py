"""The run: the one package every stage builds on, one module per concern, every name re-exported here
(``from snn4vision import rundir``).

- The run directory, the contract between pipeline stages: each stage reads
  what earlier stages wrote and adds its own files; a stage that finds
  something missing names the file and the stage that makes it
  (:mod:`~snn4vision.rundir.files`: file names, provenance, ownership), and
  one stage writes at a time, its ``--overwrite`` undone if it fails
  (:mod:`~snn4vision.rundir.transaction`: the transaction, the lock).
- The run's config (:mod:`~snn4vision.rundir.config`: :class:`TrainConfig`,
  saved as ``config.json``, and the presets), with a spiking transformer's
  shape in its own (:mod:`~snn4vision.rundir.transformer_config`:
  :class:`TransformerConfig` and :data:`TRANSFORMER_PRESETS`).
- Its model and data, and the loaders of what the stages wrote
  (:mod:`~snn4vision.rundir.loaders`: :func:`build_model`, :class:`RunData`,
  :func:`open_run`, :func:`load_trained_model`, :func:`load_ann`,
  :func:`load_snn`, :func:`load_fine_tuned`, :func:`load_trained`).

Stages import this module and never each other.
"""
from .files import (ANN_WEIGHTS, CHECKPOINTS, CLASSES, CONFIG, CONVERSION, CONVERSION_PLOT, DOWNSTREAM, ENERGY_CSV,
                    ENERGY_JSON, ENERGY_PLOT, FINE_TUNE, FINE_TUNED_CONFIG, FINE_TUNED_WEIGHTS, LOCK, MADE_BY,
                    METRICS, NIR_FILE, NIR_REPORT, OWN_CONTENTS, PROVENANCE, REPORT, RUN_NAMES, SNN_CONFIG,
                    SNN_WEIGHTS, SPLIT, STAGE_SCRIPTS, STALE, SUMMARY_JSON, SUMMARY_MD, TENSORBOARD,
                    TRANSFORMER_WEIGHTS, check_inputs, exists, file_hash, foreign_files, make, owned_name,
                    record_outputs, require, written_by)
from .transaction import (ASIDE, ASIDE_NOTE, holds_lock, locked, prepare_new, recover, refuse_foreign, replacing,
                          set_aside_stale)
from .transformer_config import TRANSFORMER_PRESETS, TransformerConfig
from .config import (ANN_ARCHITECTURES, ARCHITECTURES, LR_SCHEDULES, OPTIMIZERS, PRESETS, TRANSFORMER_ARCHITECTURES,
                     TrainConfig)
from .loaders import (RunData, build_model, load_ann, load_fine_tuned, load_snn, load_trained, load_trained_model,
                      open_run, weights_file)

__all__ = [
    "ANN_ARCHITECTURES", "ANN_WEIGHTS", "ARCHITECTURES", "ASIDE", "ASIDE_NOTE", "CHECKPOINTS", "CLASSES", "CONFIG",
    "CONVERSION", "CONVERSION_PLOT", "DOWNSTREAM", "ENERGY_CSV", "ENERGY_JSON", "ENERGY_PLOT", "FINE_TUNE",
    "FINE_TUNED_CONFIG", "FINE_TUNED_WEIGHTS", "LOCK", "LR_SCHEDULES", "MADE_BY", "METRICS", "NIR_FILE",
    "NIR_REPORT", "OPTIMIZERS", "OWN_CONTENTS", "PRESETS", "PROVENANCE", "REPORT", "RUN_NAMES", "SNN_CONFIG",
    "SNN_WEIGHTS", "SPLIT", "STAGE_SCRIPTS", "STALE", "SUMMARY_JSON", "SUMMARY_MD", "TENSORBOARD",
    "TRANSFORMER_ARCHITECTURES", "TRANSFORMER_PRESETS", "TRANSFORMER_WEIGHTS", "RunData", "TrainConfig",
    "TransformerConfig", "build_model", "check_inputs", "exists",
    "file_hash", "foreign_files", "holds_lock", "load_ann", "load_fine_tuned", "load_snn", "load_trained",
    "load_trained_model", "locked", "make", "open_run", "owned_name", "prepare_new", "record_outputs", "recover",
    "refuse_foreign", "replacing", "require", "set_aside_stale", "weights_file", "written_by",
]
