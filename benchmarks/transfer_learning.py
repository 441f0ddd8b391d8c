"""Benchmark: transfer learning between runs (--init-from) against training from scratch, on UC Merced.

Usage:
  python benchmarks/transfer_learning.py [--data ../shared/data/ucmerced] [--work runs/transfer]
                                         [--models vgg16 spikformer] [--seeds 0 1]

Pretrains on the first 11 classes (alphabetically; the default 80/10/10 split), then trains on the other 10
classes with 20 training images per class (``--split 0.2 0.1 0.7``: 20 / 10 / 70 images per class, so 700 test
images) from scratch and from the pretrained run, for the same epochs (the quick preset's). The VGG-16 is the
main job's QCFS network; it also runs the transfer with a quarter of the epochs, and with the backbone frozen
for 10 epochs, then trained at 0.1 x the learning rate. Runs that have finished (metrics.json) are reused.
Results: benchmarks/results/transfer_learning.{json,md}.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import snn4vision  # noqa: E402,F401

from snn4vision import cli  # noqa: E402
from snn4vision.checkpoints import atomic_write_json, atomic_write_text, read_json  # noqa: E402
from snn4vision.stages.training import train_ann, train_spiking_transformer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
TARGET_SPLIT = ["--split", "0.2", "0.1", "0.7"]
SHORT = {"vgg16": "vgg", "spikformer": "spikformer", "sdt": "sdt"}
#: name suffix -> (flags, what the row says); the VGG-16 runs all of them, a transformer the first two
VARIANTS = {
    "scratch": ([], "from scratch"),
    "transfer": (["--init-from", "{pretrained}"], "from the 11-class run"),
    "transfer-e25": (["--init-from", "{pretrained}", "--epochs", "25"], "from the 11-class run, 25 epochs"),
    "transfer-freeze": (["--init-from", "{pretrained}", "--freeze-backbone", "10", "--backbone-lr-factor", "0.1"],
                        "from the 11-class run, backbone frozen 10 epochs, then at 0.1 x the rate"),
}


def class_folders(data: Path, work: Path, first: int) -> tuple[Path, Path]:
    """Folders of links to the first ``first`` classes of ``data`` and to the others."""
    classes = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    parts = (work / f"ucm-a{first}", classes[:first]), (work / f"ucm-b{len(classes) - first}", classes[first:])
    for folder, names in parts:
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            if not (folder / name).exists():
                (folder / name).symlink_to((data / name).resolve())
    return parts[0][0], parts[1][0]


def train(model: str, run_dir: Path, dataset: Path, flags: list) -> dict:
    """Train (unless finished) and return metrics.json."""
    if (run_dir / "metrics.json").is_file():
        return read_json(run_dir / "metrics.json")
    argv = ["--run", str(run_dir), "--dataset", str(dataset), *flags]
    if model == "vgg16":
        config = cli.train_config(cli.train_ann_parser().parse_args(argv + ["--activation", "qcfs"]))
        return train_ann(config, resume=(run_dir / "config.json").is_file())
    config = cli.transformer_config(cli.train_spiking_transformer_parser().parse_args(argv + ["--model", model]))
    return train_spiking_transformer(config, resume=(run_dir / "config.json").is_file())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ucmerced"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "transfer"), help="folder of the runs")
    parser.add_argument("--models", nargs="+", default=["vgg16", "spikformer"], choices=sorted(SHORT))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the 10-class runs")
    parser.add_argument("--pretrain-classes", type=int, default=11)
    args = parser.parse_args()
    work = Path(args.work)
    source, target = class_folders(Path(args.data), work, args.pretrain_classes)
    rows = []
    for model in args.models:
        short = SHORT[model]
        pretrained = work / f"{short}-pre{args.pretrain_classes}"
        pre = train(model, pretrained, source, [])
        rows.append({"model": model, "run": pretrained.name, "seed": 0, "how": f"pretraining on "
                     f"{args.pretrain_classes} classes", "classes": len(pre["test"]["per_class_accuracy"]),
                     "train_images": pre["train"]["num_images"], "epochs": pre["epochs_run"],
                     "test_images": pre["test"]["num_images"], "test_accuracy": pre["test"]["accuracy"],
                     "wall_time_s": pre["wall_time_s"]})
        for seed in args.seeds:
            for suffix, (flags, how) in list(VARIANTS.items())[:None if model == "vgg16" else 2]:
                run_dir = work / f"{short}-{suffix}{'' if seed == 0 else f'-s{seed}'}"
                if seed and suffix not in ("scratch", "transfer"):
                    continue
                flags = [f.format(pretrained=pretrained) for f in flags] + TARGET_SPLIT + ["--seed", str(seed)]
                metrics = train(model, run_dir, target, flags)
                rows.append({"model": model, "run": run_dir.name, "seed": seed, "how": how,
                             "classes": len(metrics["test"]["per_class_accuracy"]),
                             "train_images": metrics["train"]["num_images"], "epochs": metrics["epochs_run"],
                             "test_images": metrics["test"]["num_images"],
                             "test_accuracy": metrics["test"]["accuracy"], "wall_time_s": metrics["wall_time_s"]})
                print(f"{run_dir.name}: {metrics['test']['accuracy']:.3f}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "transfer_learning.json", {"rows": rows})
    lines = ["# Transfer learning on UC Merced: pretrain on 11 classes, then 20 images per class of the other 10",
             "", "Written by `python benchmarks/transfer_learning.py` (see its docstring for the protocol).", "",
             "| model | run | seed | how | classes | training images | epochs | test images | test accuracy "
             "| training s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['run']} | {r['seed']} | {r['how']} | {r['classes']} | {r['train_images']} "
                     f"| {r['epochs']} | {r['test_images']} | {100 * r['test_accuracy']:.1f} % "
                     f"| {r['wall_time_s']:.0f} |")
    lines += ["", "Test accuracy: the 10-class runs on 700 test images (one image is 0.14 points), the pretraining on "
              "its own 110. Training s: the run's own training time (`wall_time_s` of its metrics.json) on this "
              "machine's 2 CPU cores; runs that shared the cores with other jobs took longer, so compare times "
              "within one seed's rows only where they ran alone."]
    atomic_write_text(RESULTS / "transfer_learning.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
