"""Classify image files with a run's ANN or SNN. See README.md for every flag."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn4vision import cli  # noqa: E402  (sets up tf-keras before TensorFlow loads)


def main(argv=None):
    from snn4vision.predict import predict

    args = cli.predict_parser().parse_args(argv)
    for row in predict(args.run_dir, args.images, args.model, args.timesteps):
        extra = f"  spikes {row['spikes']}" if "spikes" in row else ""
        print(f"{row['image']}: {row['class']} ({row['probability']:.3f}){extra}")


if __name__ == "__main__":
    cli.run(main)
