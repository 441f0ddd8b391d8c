"""Stage 3: fine-tune the converted SNN over doubling timesteps. See README.md for every flag.

The same command is installed as the console script snn4vision-fine-tune."""
from snn4vision.cli import fine_tune_main

if __name__ == "__main__":
    fine_tune_main()
