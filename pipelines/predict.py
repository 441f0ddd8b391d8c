"""Classify image files with a run's ANN or SNN. See README.md for every flag.

The same command is installed as the console script snn4vision-predict."""
from snn4vision.cli import predict_main

if __name__ == "__main__":
    predict_main()
