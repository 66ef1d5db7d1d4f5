"""``u2bench predict --ray`` on a two-node loopback Ray cluster against local predict on the same cores.

    python tools/ray_speed.py --model small320_int8.onnx [--num 200 --repeat 2] [--rounds 2] [--cpus 1,1]

One loopback cluster (u2deploy.distributed.loopback: nodes on 127.0.0.1 of a private network
namespace, ``--cpus`` CPUs each) runs everything, in alternating rounds (local predict, then the Ray
job; the next round the other way round), so that the shared machine's drifting load hits both
alike. The images are ``--num`` held-out ECSSD images (0801 onwards), each linked ``--repeat`` times
(``a_0801.jpg``, ``b_0801.jpg`` …). Each contender is one whole command, timed from its start to its
exit: for the Ray job that is connecting, opening the artifact on a node, starting the actors and
the job, but not starting the cluster, which is reported on its own (each ``ray start``), with a
one-image job of each kind (the fixed cost of a job), the memory of each node (the PSS of its
processes summed: idle, and at its peak during each job) and the peak RSS of each command, and the
CPU seconds per image of each contender (the command's and every node's, so a local run also pays
the idle cluster's): on a shared machine, the ratio of CPU time per image estimates the ratio of
speeds on two otherwise idle cores, where both keep the cores busy.

Writes docs/ray_speed.json (with the CPU and the load average) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from u2deploy import hardware  # noqa: E402
from u2deploy.distributed.loopback import run_steps_isolated  # noqa: E402

DEFAULT_ECSSD = ROOT.parent / "shared" / "datasets" / "ECSSD"
BENCH = [sys.executable, "-m", "u2deploy.cli.bench"]


def prepare_images(ecssd: Path, num: int, repeat: int, folder: Path) -> int:
    names = [f"{801 + k:04d}.jpg" for k in range(num)]
    folder.mkdir()
    for copy in range(repeat):
        for name in names:
            (folder / f"{chr(ord('a') + copy)}_{name}").symlink_to(ecssd / "images" / name)
    return num * repeat


def predict(model: Path, images: Path, out: Path, ray: bool) -> list[str]:
    return [*BENCH, "predict", "--model", str(model), "--images", str(images), "-o", str(out),
            *(["--ray", "{address}"] if ray else [])]


def rate(step: dict[str, Any], n: int) -> dict[str, Any]:
    if step["rc"] != 0:
        raise SystemExit(f"ray_speed: {step['name']} failed ({step['rc']}):\n{step['stderr'][-2000:]}")
    summary = step["stdout"].strip().splitlines()[-1]
    in_job = float(summary.split(" images/s")[0].rsplit("· ", 1)[-1]) if " images/s" in summary else None
    cpu = step["cpu_s_command"] + sum(step["cpu_s_nodes"])  # the idle cluster's too, during a local run
    return {"s": round(step["seconds"], 2), "images_per_s": round(n / step["seconds"], 2),
            "in_job_images_per_s": in_job, "cpu_s_command": round(step["cpu_s_command"], 1),
            "cpu_s_nodes": [round(c, 1) for c in step["cpu_s_nodes"]], "cpu_s_per_image": round(cpu / n, 3),
            "peak_rss_command_mib": round(step["peak_rss_command"] / 2**20),
            "peak_memory_nodes_mib": [round(b / 2**20) for b in step["peak_memory_nodes"]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="ONNX artifact (the INT8 --target cpu one at 320)")
    ap.add_argument("--ecssd", type=Path, default=DEFAULT_ECSSD)
    ap.add_argument("--num", type=int, default=200, help="held-out images from 0801 (at most 200)")
    ap.add_argument("--repeat", type=int, default=2, help="each image this many times")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpus", default="1,1", help="CPUs per Ray node, head first")
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "ray_speed.json")
    args = ap.parse_args()
    model = args.model.resolve()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ray_speed.") as tmp_name:
        tmp = Path(tmp_name)
        n = prepare_images(args.ecssd, min(args.num, 200), args.repeat, tmp / "images")
        one = tmp / "one"
        one.mkdir()
        (one / "0801.jpg").symlink_to(args.ecssd / "images" / "0801.jpg")
        steps: list[dict[str, Any]] = [
            {"name": "startup local", "cmd": predict(model, one, tmp / "s_local", ray=False)},
            {"name": "startup ray", "cmd": predict(model, one, tmp / "s_ray", ray=True)},
        ]
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for ray in order:
                kind = "ray" if ray else "local"
                steps.append({"name": f"{kind} {r}", "cmd": predict(model, tmp / "images", tmp / f"{kind}{r}", ray)})
        for step in steps:
            step["timeout_s"] = 1200
        cpus = [int(c) for c in args.cpus.split(",")]
        result = run_steps_isolated(steps, cpus=cpus, workdir=tmp, timeout_s=1200 * len(steps))
    by_name = {s["name"]: s for s in result["steps"]}
    rounds = [{"local": rate(by_name[f"local {r}"], n), "ray": rate(by_name[f"ray {r}"], n)}
              for r in range(args.rounds)]
    ratios = [r["ray"]["images_per_s"] / r["local"]["images_per_s"] for r in rounds]
    cpu_ratios = [r["local"]["cpu_s_per_image"] / r["ray"]["cpu_s_per_image"] for r in rounds]
    report = {
        "cpu": hardware.cpu()["model"], "isa": hardware.isa_line(), "cores": hardware.usable_cpus(),
        "python": platform.python_version(), "model": str(args.model), "images": n,
        "image_set": f"ECSSD {801:04d}-{800 + min(args.num, 200):04d} (held out), each {args.repeat}×",
        "ray_nodes_cpus": cpus, "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "cluster_start_s": [round(s, 1) for s in result["start_s"]],
        "idle_memory_nodes_mib": [round(b / 2**20) for b in result["idle_memory_nodes"]],
        "startup": {"local": rate(by_name["startup local"], 1), "ray": rate(by_name["startup ray"], 1)},
        "rounds": rounds,
        "ratio_ray_over_local": {"median": round(statistics.median(ratios), 3),
                                 "min": round(min(ratios), 3), "max": round(max(ratios), 3)},
        # CPU seconds per image, local over Ray: what the ratio would be on two otherwise idle cores
        "cpu_ratio_local_over_ray": {"median": round(statistics.median(cpu_ratios), 3),
                                     "min": round(min(cpu_ratios), 3), "max": round(max(cpu_ratios), 3)},
    }
    import ray

    report["ray"] = ray.__version__
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['isa']} · {n} images · Ray {report['ray']}, {len(cpus)} nodes × {cpus} CPUs · "
          f"load {report['load_avg_before']} → {report['load_avg_after']}\n")
    print("| round | local predict: images/s (s) | CPU s/image | --ray: images/s (s) | CPU s/image | ratio | "
          "CPU ratio |\n|---|---|---|---|---|---|---|")
    for k, (r, ratio, cpu_ratio) in enumerate(zip(rounds, ratios, cpu_ratios)):
        print(f"| {k} | {r['local']['images_per_s']} ({r['local']['s']}) | {r['local']['cpu_s_per_image']} | "
              f"{r['ray']['images_per_s']} ({r['ray']['s']}) | {r['ray']['cpu_s_per_image']} | {ratio:.2f} | "
              f"{cpu_ratio:.2f} |")
    print(f"\nratio (median of rounds): {report['ratio_ray_over_local']['median']:.2f}, by CPU time "
          f"{report['cpu_ratio_local_over_ray']['median']:.2f}; cluster start {report['cluster_start_s']} s per "
          f"node; one-image job: local {report['startup']['local']['s']} s, ray {report['startup']['ray']['s']} s; "
          f"idle memory per node {report['idle_memory_nodes_mib']} MiB (PSS)")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
