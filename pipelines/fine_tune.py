"""Stage 3: fine-tune the converted SNN over doubling timesteps. See README.md for every flag."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn4vision import cli  # noqa: E402  (sets up tf-keras before TensorFlow loads)


def main(argv=None):
    from snn4vision.fine_tuning import fine_tune

    args = cli.fine_tune_parser().parse_args(argv)
    fine_tune(cli.fine_tune_config(args), resume=args.resume, overwrite=args.overwrite)


if __name__ == "__main__":
    cli.run(main)
