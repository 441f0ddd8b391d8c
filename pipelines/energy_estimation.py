"""Stage 4: energy per inference of the ANN and the SNN on hardware profiles. See README.md.

The same command is installed as the console script snn4vision-energy-estimation."""
from snn4vision.cli import energy_estimation_main

if __name__ == "__main__":
    energy_estimation_main()
