"""The whole pipeline: train, convert, fine-tune (relu path), energy, one summary. See README.md."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn4vision import cli  # noqa: E402  (sets up tf-keras before TensorFlow loads)


def main(argv=None):
    from snn4vision.pipeline import run_all

    args = cli.run_all_parser().parse_args(argv)
    run_all(cli.run_all_config(args), resume=args.resume, overwrite=args.overwrite)


if __name__ == "__main__":
    cli.run(main)
