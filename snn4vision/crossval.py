"""Cross-validation: gather the K fold runs of one setting (``run_all.py --folds K --fold i``) and put 95 %
intervals on what they measured, alone or paired with another setting on the same folds.

Two kinds of interval, for two questions:

- **pooled accuracy**, every image tested exactly once over the K folds, with Wilson's score interval: how well
  the N test predictions pin down this set of trained networks (test-sample noise only);
- **fold means** with Student's t interval over the K folds: the setting's expected value, including the noise of
  training (each fold is a fresh training), which is what a claim about a setting needs. A *paired* comparison of
  two settings takes the t interval of their per-fold differences, which cancels what the folds share (their
  test images, their split).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .checkpoints import read_json
from .errors import UserError

#: Student's t quantile at 0.975 by degrees of freedom (standard tables; 1.96 beyond 30).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom (two-sided 95 %)."""
    if dof < 1:
        raise ValueError("a t interval needs at least two values")
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


def mean_interval(values: Sequence[float]) -> dict:
    """Mean of ``values`` with its two-sided 95 % Student t interval."""
    values = np.asarray(values, float)
    mean = float(values.mean())
    half = t975(len(values) - 1) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(values)}


def wilson_interval(correct: int, total: int) -> dict:
    """Proportion ``correct / total`` with Wilson's 95 % score interval."""
    z, p = 1.959964, correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return {"mean": p, "low": centre - half, "high": centre + half, "n": total}


#: The keys of one fold's record (:func:`fold_result`), as a gathered results file keeps it per fold.
RECORD_KEYS = ("fold", "folds", "seed", "test_images", "test_digest", "ann", "snn", "gap", "energy", "timesteps",
               "run")


def test_digest(items: Sequence[str]) -> str:
    """A short fingerprint of a fold's test images (their names, in any order): two folds are paired only where
    their digests agree, so a fold kept in a results file is paired as safely as one read from its run."""
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]


def fold_result(run_dir: str | Path) -> dict:
    """What one fold run measured: the ANN's test accuracy (``metrics.json``) and, where run_all finished
    (``summary.json``), the SNN's at its energy T, their gap and each device's SNN/ANN energy ratio
    (compute-only model; else None); with the fold's test images counted and fingerprinted (:func:`test_digest`)."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    if not config.get("folds"):
        raise UserError(f"{run_dir} is not a cross-validation fold: train it with --folds K --fold I")
    if not (run_dir / "metrics.json").is_file():
        raise UserError(f"{run_dir} has no metrics.json: finish its training with --resume")
    test = [item for item, _ in read_json(run_dir / "split.json")["test"]]
    result = {"run": str(run_dir), "folds": config["folds"], "fold": config["fold"], "seed": config["seed"],
              "test_images": len(test), "test_digest": test_digest(test),
              "ann": read_json(run_dir / "metrics.json")["test"]["accuracy"], "snn": None, "gap": None,
              "timesteps": None, "energy": None}
    if (run_dir / "summary.json").is_file():
        energy = read_json(run_dir / "summary.json")["energy"]
        result.update(snn=energy["snn_test_accuracy"], gap=energy["snn_test_accuracy"] - result["ann"],
                      timesteps=energy["timesteps"],
                      energy={device: d["snn_over_ann"] for device, d in energy["devices"].items()})
    return result


def saved_folds(path: str | Path, setting: str) -> list:
    """The fold records of ``setting`` in a results file that :func:`summarise` wrote (``per_fold``), so that a
    setting whose run directories are gone can still be reported and paired."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist: give a results file that benchmarks/cross_validation.py wrote")
    settings = read_json(path).get("settings", {})
    if setting not in settings:
        raise UserError(f"{path} has no setting {setting!r}: it has {', '.join(sorted(settings)) or 'none'}")
    records = settings[setting]["per_fold"]
    lacking = sorted({key for r in records for key in RECORD_KEYS if key not in r})
    if lacking:
        raise UserError(f"{path}: the folds of {setting!r} were gathered before their records kept "
                        f"{', '.join(lacking)}: gather them again from their run directories")
    return [dict(r) for r in records]


def gather(source: str | Path) -> list:
    """A setting's fold records from ``source``: a folder of fold runs (each sub-folder with a ``config.json``),
    or ``FILE#SETTING``, a setting kept in a results file (:func:`saved_folds`)."""
    text = str(source)
    if "#" in text:
        path, setting = text.rsplit("#", 1)
        return saved_folds(path, setting)
    folder = Path(text)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of fold runs: give the --runs-dir the folds were run in, or "
                        f"FILE.json#SETTING for a setting kept in a results file")
    return [fold_result(d) for d in sorted(folder.iterdir()) if (d / "config.json").is_file()]


def _results(folds: Sequence) -> list:
    """Fold records from run directories, records, or both."""
    return [f if isinstance(f, dict) else fold_result(f) for f in folds]


def _complete(results: list, where: str) -> list:
    """``results`` sorted by fold; refused unless they are folds 0 .. K-1 of one K and one seed, once each."""
    kinds = {(r["folds"], r["seed"]) for r in results}
    if len(kinds) != 1:
        raise UserError(f"{where}: the runs mix --folds/--seed settings {sorted(kinds)}: gather one setting's folds")
    folds = results[0]["folds"]
    have = sorted(r["fold"] for r in results)
    if have != list(range(folds)):
        missing = sorted(set(range(folds)) - set(have))
        raise UserError(f"{where}: need folds 0 .. {folds - 1} once each, have {have}"
                        + (f" (missing {missing})" if missing else ""))
    return sorted(results, key=lambda r: r["fold"])


def _measured(results: list) -> list:
    """The keys every fold has: the ANN always, the SNN, gap and energy where every fold ran the whole pipeline."""
    return ["ann"] + (["snn", "gap"] if all(r["snn"] is not None for r in results) else [])


def _devices(*settings: list) -> list:
    return sorted(set.intersection(*(set(r["energy"]) for s in settings for r in s))) \
        if all(r["energy"] is not None for s in settings for r in s) else []


def summarise(folds: Sequence, where: str = "cross-validation") -> dict:
    """One setting over its K folds (run directories or fold records, :func:`gather`): pooled accuracies (Wilson)
    and fold means (t) of the ANN, the SNN, their gap and each device's SNN/ANN energy ratio (those the runs
    measured)."""
    results = _complete(_results(folds), where)
    keys = _measured(results)
    sizes = np.asarray([r["test_images"] for r in results])
    pooled = {}
    for key in keys[:2]:
        correct = int(round(sum(r[key] * n for r, n in zip(results, sizes))))  # accuracy x size is a count
        pooled[key] = wilson_interval(correct, int(sizes.sum()))
    return {"folds": results[0]["folds"], "seed": results[0]["seed"], "images": int(sizes.sum()),
            "pooled": pooled, "fold_mean": {key: mean_interval([r[key] for r in results]) for key in keys},
            "energy": {d: mean_interval([r["energy"][d] for r in results]) for d in _devices(results)},
            "per_fold": [{k: r[k] for k in RECORD_KEYS} for r in results]}


def compare(a_folds: Sequence, b_folds: Sequence) -> dict:
    """Setting A minus setting B (run directories or fold records each), paired fold by fold (the same test
    images in each pair): t intervals of the differences of what both measured (ANN; SNN, gap and energy ratios
    where both ran the pipeline), and of A's SNN minus B's ANN (an SNN against the best ANN of the same budget)."""
    a = _complete(_results(a_folds), "setting A")
    b = _complete(_results(b_folds), "setting B")
    if len(a) != len(b) or any(x["test_digest"] != y["test_digest"] for x, y in zip(a, b)):
        raise UserError("the two settings were not tested on the same folds (other --folds, --seed or data): a "
                        "paired comparison needs the same test images in each fold")
    keys = [k for k in _measured(a) if k in _measured(b)]
    diff = {key: mean_interval([x[key] - y[key] for x, y in zip(a, b)]) for key in keys}
    if "snn" in _measured(a):
        diff["snn_vs_ann"] = mean_interval([x["snn"] - y["ann"] for x, y in zip(a, b)])
    diff["energy"] = {d: mean_interval([x["energy"][d] - y["energy"][d] for x, y in zip(a, b)])
                      for d in _devices(a, b)}
    return diff
