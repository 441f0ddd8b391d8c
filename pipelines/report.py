"""Compare finished runs side by side in one HTML page. See README.md for every flag.

The same command is installed as the console script snn4vision-report."""
from snn4vision.cli import report_main

if __name__ == "__main__":
    report_main()
