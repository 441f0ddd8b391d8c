"""The commands: the error wrapper every pipeline script runs under (:func:`run`), the commands and their entry
points (``pipelines/<name>.py`` and the console scripts ``snn4vision-<name>``); the argument parsers are in
:mod:`~snn4vision.cli.training_flags` and :mod:`~snn4vision.cli.stage_flags`, re-exported here."""
from __future__ import annotations

import errno
import functools
import os
import sys
from typing import Callable, Sequence

# TensorFlow reads its C++ log level when it is first imported, which the stages below do
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ..stages.convert import convert_snn  # noqa: E402
from ..stages.energy import estimate_energy  # noqa: E402
from ..stages.export import ExportConfig, export_nir  # noqa: E402
from ..stages.fine_tuning import fine_tune  # noqa: E402
from ..pipeline import run_all  # noqa: E402
from ..stages.predict import predict  # noqa: E402
from ..stages.report import ReportConfig, write_report  # noqa: E402
from ..stages.training import train_ann, train_spiking_transformer  # noqa: E402
from ..errors import UserError  # noqa: E402
from .stage_flags import (convert_config, convert_snn_parser, energy_parser, export_nir_parser,  # noqa: E402
                          fine_tune_config, fine_tune_parser, predict_parser, report_parser)
from .training_flags import (add_run_flags, explicit_flags, input_transform, non_negative_int,  # noqa: E402
                             positive_float, positive_int, run_all_config, run_all_parser,
                             train_ann_parser, train_config, train_spiking_transformer_parser, training_parser,
                             transformer_config)

__all__ = [
    "add_run_flags", "convert_config", "convert_snn_main", "convert_snn_parser", "energy_estimation_main",
    "energy_parser", "explicit_flags", "export_nir_main", "export_nir_parser", "fine_tune_config", "fine_tune_main",
    "fine_tune_parser", "input_transform", "machine_limit", "non_negative_int", "positive_float", "positive_int",
    "predict_main", "predict_parser", "report_main", "report_parser", "run", "run_all_config",
    "run_all_main", "run_all_parser", "train_ann_main", "train_ann_parser", "train_config",
    "train_spiking_transformer_main", "train_spiking_transformer_parser", "training_parser", "transformer_config",
]


def run(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    """Run a pipeline's ``main``; a UserError becomes one line on stderr and exit status 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (OSError, MemoryError, tf.errors.OpError) as exc:
        message = machine_limit(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: run the same command with --resume to continue (an interrupted --overwrite has put "
              "the earlier results back instead)", file=sys.stderr)
        sys.exit(130)


def machine_limit(exc: BaseException) -> str | None:
    """One line for a full disk or exhausted memory met while a stage ran (None for other errors).

    The stage has already put back what ``--overwrite`` set aside and removed its incomplete outputs.
    """
    import tensorflow as tf

    text = str(exc)
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in text:
        where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
        return (f"the disk is full ({exc.strerror if getattr(exc, 'strerror', None) else 'no space left'}{where}): "
                "free some space or choose a --run directory on another disk, then run the same command again "
                "(with --resume where the stage has it); earlier results were kept")
    if isinstance(exc, tf.errors.ResourceExhaustedError) or isinstance(exc, MemoryError):
        return ("out of memory while the stage ran: lower --batch-size (or --timesteps, --image-size); earlier "
                "results were kept")
    return None


# --------------------------------------------------------------------------
# Commands: pipelines/<name>.py and the console scripts snn4vision-<name> (setup.cfg) run these
# --------------------------------------------------------------------------
def _train_ann(argv=None) -> None:
    args = train_ann_parser().parse_args(argv)
    train_ann(train_config(args), resume=args.resume, overwrite=args.overwrite)


def _train_spiking_transformer(argv=None) -> None:
    args = train_spiking_transformer_parser().parse_args(argv)
    train_spiking_transformer(transformer_config(args), resume=args.resume, overwrite=args.overwrite)


def _convert_snn(argv=None) -> None:
    args = convert_snn_parser().parse_args(argv)
    convert_snn(convert_config(args), overwrite=args.overwrite)


def _fine_tune(argv=None) -> None:
    args = fine_tune_parser().parse_args(argv)
    fine_tune(fine_tune_config(args), resume=args.resume, overwrite=args.overwrite)


def _energy_estimation(argv=None) -> None:
    args = energy_parser().parse_args(argv)
    estimate_energy(args.run_dir, args.devices, args.timesteps, args.model, args.profiles, args.batch_size,
                    args.data_dir, args.overwrite)


def _predict(argv=None) -> None:
    args = predict_parser().parse_args(argv)
    for row in predict(args.run_dir, args.images, args.model, args.timesteps):
        extra = f"  spikes {row['spikes']}" if "spikes" in row else ""
        print(f"{row['image']}: {row['class']} ({row['probability']:.3f}){extra}")


def _export_nir(argv=None) -> None:
    args = export_nir_parser().parse_args(argv)
    config = ExportConfig(args.run_dir, args.model, args.timesteps, args.out, args.approximate, args.check,
                          args.check_images, args.batch_size, args.data_dir)
    export_nir(config, overwrite=args.overwrite)


def _report(argv=None) -> None:
    args = report_parser().parse_args(argv)
    write_report(ReportConfig(args.runs, args.out, args.timesteps, args.devices, args.profiles, args.batch_size,
                              args.timing_images, args.data_dir), overwrite=args.overwrite)


def _run_all(argv=None) -> None:
    args = run_all_parser().parse_args(argv)
    given = explicit_flags(run_all_parser(), argv)
    run_all(run_all_config(args, given), resume=args.resume, overwrite=args.overwrite)


# The entry points: each runs one command under run(); pipelines/<name>.py and the console scripts call them.
train_ann_main = functools.partial(run, _train_ann)
train_spiking_transformer_main = functools.partial(run, _train_spiking_transformer)
convert_snn_main = functools.partial(run, _convert_snn)
fine_tune_main = functools.partial(run, _fine_tune)
energy_estimation_main = functools.partial(run, _energy_estimation)
predict_main = functools.partial(run, _predict)
run_all_main = functools.partial(run, _run_all)
export_nir_main = functools.partial(run, _export_nir)
report_main = functools.partial(run, _report)
