"""Training time and peak memory at x1 and x10 data on this machine.

Builds a lake and the training mart once (real data, x1), saves the mart, then
in a fresh child process per scale: reads it, repeats every row ``scale`` times
(x10 = 3.3 M rows), splits by time and fits the gradient-boosted pipeline,
reporting fit seconds, rows/s and peak resident memory (VmHWM). A last child
runs the whole ``lab train`` at x1 (fit, baseline, plots, MLflow logging and
registration) for the end-to-end figure.

Run: ``.venv/bin/python bench/train.py [--scales 1,10]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no /proc/self/status")


def build_mart(workdir: Path) -> Path:
    from core.settings import Settings
    from ingestion.declarations import load_declarations
    from ingestion.loader import ingest
    from ml.data import read_mart
    from warehouse.dbt import run_dbt
    from warehouse.publish import publish

    settings = Settings(home=workdir / ".lab", sources_dirs=[])
    for decl in load_declarations().values():
        ingest(decl, settings)
    publish(settings)
    run_dbt(settings, ["run"])
    out = workdir / "training_flights.parquet"
    read_mart(settings).to_parquet(out)
    return out


def child_fit(mart: Path, scale: int) -> dict[str, float]:
    import pandas as pd

    from ml import model as factories
    from ml.data import prepare, split
    from ml.train import score

    frame = prepare(pd.read_parquet(mart))
    frame = pd.concat([frame] * scale, ignore_index=True) if scale > 1 else frame
    data = split(frame, 2)
    x, y = data.xy(data.train)
    pipeline = factories.gradient_boosting(data.categorical, data.numeric)
    started = time.perf_counter()
    pipeline.fit(x, y)
    seconds = time.perf_counter() - started
    auc = score(pipeline, *data.xy(data.eval))["roc_auc"]
    return {"rows": len(x), "seconds": seconds, "roc_auc": auc, "peak_rss_mib": peak_rss_mib()}


def child_train(workdir: Path) -> dict[str, float]:
    from core.settings import Settings
    from ml.train import train

    settings = Settings(home=workdir / ".lab", sources_dirs=[])
    started = time.perf_counter()
    result = train(settings, "gbm")
    return {"rows": result.rows, "seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}


def run_child(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--child", choices=["fit", "train"])
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    if args.child == "fit":
        print(json.dumps(child_fit(args.workdir / "training_flights.parquet", args.scale)))
        return
    if args.child == "train":
        print(json.dumps(child_train(args.workdir)))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-train-"))
    build_mart(workdir)
    fits = {
        s: run_child("--child", "fit", "--workdir", str(workdir), "--scale", str(s))
        for s in map(int, args.scales.split(","))
    }
    full = run_child("--child", "train", "--workdir", str(workdir))

    print(f"\ngradient-boosted pipeline fit (workdir {workdir})\n")
    print(f"{'scale':>5} {'train rows':>11} | {'fit s':>7} {'rows/s':>9} {'peak MiB':>9} | {'held-out ROC AUC':>16}")
    for scale, fit in fits.items():
        print(
            f"{'x' + str(scale):>5} {int(fit['rows']):>11,} | {fit['seconds']:>7.1f}"
            f" {fit['rows'] / fit['seconds']:>9,.0f}"
            f" {fit['peak_rss_mib']:>9,.0f} | {fit['roc_auc']:>16.4f}"
        )
    print(
        f"\nlab train end to end at x1 (fit + baseline + plots + MLflow log and register): "
        f"{full['seconds']:.1f} s, peak {full['peak_rss_mib']:,.0f} MiB"
    )


if __name__ == "__main__":
    main()
