"""medical.segment figures: synthetic Dice and time, MNI152 grey-matter Dice, sliding-window cost.

    python benchmarks/medical.py            # all three (about 10 minutes on 2 CPU cores)

1. Sliding-window inference of the default U-Net over one 128x128x128 volume (32^3 windows,
   overlap 0.25): seconds and the process's peak resident memory (CPU) or peak CUDA memory.
2. ``dlguide run medical.segment`` with its defaults (synthetic spheres written as NIfTI in the
   Decathlon layout): test mean Dice; target >= 0.90 within 5 minutes of wall time.
3. ``dataset=mni-brain`` at 2 mm: Dice of grey matter on a held-out front-to-back slab (reported).

Figures are printed and written to benchmarks/results/medical.json. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import dlguide_medical.plugin
from _common import RESULTS, environment, plugin_runtime, save_json, timed_run

SYNTHETIC = {"overrides": [], "target_dice": 0.90, "max_seconds": 300.0}
MNI = {"overrides": ["dataset=mni-brain", "spacing=[2,2,2]", "patch_size=[32,16,32]", "samples_per_volume=8",
                     "epochs=60"]}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def sliding_window() -> dict[str, Any]:
    from monai.inferers import sliding_window_inference

    from dlguide_medical.models import unet
    from dlguide_medical.segment import SegmentationConfig

    cfg = SegmentationConfig()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = unet(cfg, {"channels": 1, "classes": ["object"]}).to(device).eval()
    volume = torch.randn(1, 1, 128, 128, 128, device=device)
    before = peak_rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        sliding_window_inference(volume, tuple(cfg.patch_size), cfg.sw_batch_size, model, overlap=cfg.sw_overlap)
        started = time.perf_counter()
        sliding_window_inference(volume, tuple(cfg.patch_size), cfg.sw_batch_size, model, overlap=cfg.sw_overlap,
                                 mode="gaussian")
        seconds = time.perf_counter() - started
    memory = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib())
    return {"volume": "128x128x128", "roi": cfg.patch_size, "overlap": cfg.sw_overlap, "device": device.type,
            "seconds": round(seconds, 2), "peak_memory_mib": round(memory, 1),
            "peak_memory_kind": "CUDA allocated" if device.type == "cuda" else "process peak RSS",
            "rss_before_mib": round(before, 1)}


def run(name: str, overrides: list[str], workdir: Path, runtime: Any) -> tuple[dict[str, float], float]:
    timed = timed_run("medical.segment", overrides, workdir / name, runtime)
    return timed.metrics, timed.wall_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "medical.json"))
    out = Path(parser.parse_args().out)
    runtime = plugin_runtime("medical", dlguide_medical.plugin)
    results: dict[str, Any] = {"command": "python benchmarks/medical.py",
                               "caveat": "2 CPU cores; wall times depend on the machine's load (the load average "
                                         "at the end is noted below)"}
    results["sliding_window"] = sw = sliding_window()
    print(f"sliding window 128^3: {sw['seconds']:.2f} s, peak memory {sw['peak_memory_mib']:.0f} MiB "
          f"({sw['peak_memory_kind']})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        metrics, wall = run("synthetic", SYNTHETIC["overrides"], Path(tmp), runtime)
        passed = metrics["test/dice"] >= SYNTHETIC["target_dice"] and wall <= SYNTHETIC["max_seconds"]
        results["synthetic"] = {"overrides": SYNTHETIC["overrides"], "test_dice": round(metrics["test/dice"], 4),
                                "test_hd95_mm": round(metrics["test/hd95"], 3), "wall_seconds": round(wall, 1),
                                "target": "test mean Dice >= 0.90 within 300 s", "passed": passed}
        print(f"synthetic: test Dice {metrics['test/dice']:.4f}, HD95 {metrics['test/hd95']:.2f} mm, {wall:.0f} s "
              f"-> {'PASS' if passed else 'FAIL'}", flush=True)
        metrics, wall = run("mni", MNI["overrides"], Path(tmp), runtime)
        results["mni_brain"] = {"overrides": MNI["overrides"],
                                "test_dice_grey_matter": round(metrics["test/dice/grey_matter"], 4),
                                "test_dice_white_matter": round(metrics["test/dice/white_matter"], 4),
                                "test_hd95_mm": round(metrics["test/hd95"], 3), "wall_seconds": round(wall, 1),
                                "target": "reported (one held-out slab of the MNI152 template)"}
        print(f"mni-brain: grey-matter Dice {metrics['test/dice/grey_matter']:.4f}, white-matter "
              f"{metrics['test/dice/white_matter']:.4f}, {wall:.0f} s", flush=True)
    results["environment"] = environment()
    save_json(out, results)
    return 0 if results["synthetic"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
