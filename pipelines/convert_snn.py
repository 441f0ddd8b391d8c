"""Stage 2: convert the trained ANN into a spiking network. See README.md for every flag."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn4vision import cli  # noqa: E402  (sets up tf-keras before TensorFlow loads)


def main(argv=None):
    from snn4vision.convert import convert_snn

    args = cli.convert_snn_parser().parse_args(argv)
    convert_snn(cli.convert_config(args), overwrite=args.overwrite)


if __name__ == "__main__":
    cli.run(main)
