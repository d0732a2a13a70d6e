"""CLI start-up: `dlguide list` must not import torch. Times a cold `dlguide list` and a cold
`python -c "import torch"` in fresh processes, alternating, and prints the ratio of medians
(target < 0.25). Saves benchmarks/results/cli_startup.json.

    python benchmarks/cli_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def wall(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cli_startup.json"))
    args = parser.parse_args()
    dlguide = shutil.which("dlguide") or str(Path(sys.executable).with_name("dlguide"))
    commands = {"dlguide list": [dlguide, "list"], "import torch": [sys.executable, "-c", "import torch"]}
    for cmd in commands.values():  # the first run of each fills the OS file cache
        wall(cmd)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            times[name].append(wall(cmd))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    ratio = medians["dlguide list"] / medians["import torch"]
    result = {"seconds": times, "median_seconds": medians, "ratio": ratio, "target": "ratio < 0.25",
              "python": sys.version.split()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, m in medians.items():
        print(f"{name:>14}: median {m * 1000:.0f} ms over {args.repeats} runs")
    print(f"ratio dlguide list / import torch: {ratio:.3f} (target < 0.25)")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
