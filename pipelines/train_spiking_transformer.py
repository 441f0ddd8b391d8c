"""Train a Spikformer or Spike-driven Transformer directly (surrogate gradients). See README.md for every flag."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn4vision import cli  # noqa: E402  (sets up tf-keras before TensorFlow loads)


def main(argv=None):
    from snn4vision.training import train_spiking_transformer

    args = cli.train_spiking_transformer_parser().parse_args(argv)
    train_spiking_transformer(cli.transformer_config(args), resume=args.resume, overwrite=args.overwrite)


if __name__ == "__main__":
    cli.run(main)
