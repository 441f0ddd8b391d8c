"""Stage 4: energy per inference of the ANN and the SNN on hardware profiles. See README.md."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snn4vision import cli  # noqa: E402  (sets up tf-keras before TensorFlow loads)


def main(argv=None):
    from snn4vision.energy import estimate_energy

    args = cli.energy_parser().parse_args(argv)
    estimate_energy(args.run_dir, args.devices, args.timesteps, args.model, args.profiles, args.batch_size,
                    args.data_dir, args.overwrite)


if __name__ == "__main__":
    cli.run(main)
