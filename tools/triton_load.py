"""A small, bounded load test of `u2export triton`'s ensemble on a local Triton server (127.0.0.1 only).

    u2export triton-env /tmp/triton-env        # once, where numpy is 2: the server's numpy<2 (pip downloads it)
    python tools/triton_load.py --model d160.onnx --server-python /tmp/triton-env/bin/python3
    python tools/triton_load.py --model d160.onnx --server-python … --clients 1,4,8 --requests 160 --json load.json

For each mode (dynamic batching on, then off) a repository is written with ``u2export triton
--preprocess-in-server --model-backend python`` (the server is the nvidia-pytriton wheel's
tritonserver, python backend only), the server is started on 127.0.0.1 with free ports, and N
concurrent clients (one thread and one connection each) send encoded images (held-out ECSSD
0801-1000 when ../shared is there, else generated ones) until ``--requests`` requests are answered
or ``--time-s`` has passed. Reported per (mode, N): client-side p50/p99 latency, throughput, and the
mean batch the network step ran (the server's inference count over its execution count). Every
loop is bounded in count and time, and the server is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _images(n: int) -> list[bytes]:
    from u2deploy.data.samples import ECSSD_HELD_OUT, ecssd_root, generated_images

    root = ecssd_root()
    if root is not None:
        paths = [root / "images" / f"{i:04d}.jpg" for i in ECSSD_HELD_OUT]
        return [p.read_bytes() for p in paths if p.is_file()][:n]
    import io

    from PIL import Image

    out = []
    for image in generated_images(n, seed=3):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def _client(protocol: str, url: str):
    if protocol == "grpc":
        import tritonclient.grpc as module

        return module, module.InferenceServerClient(url)
    import tritonclient.http as module

    return module, module.InferenceServerClient(url, connection_timeout=30, network_timeout=120)


def _request(module, data: bytes):
    inp = module.InferInput("IMAGE", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[data]], dtype=object))
    return [inp]


def _stats(module_client, model: str, protocol: str) -> tuple[int, int]:
    if protocol == "grpc":
        stats = module_client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    else:
        stats = module_client.get_inference_statistics(model)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def run_clients(server, protocol: str, n_clients: int, images: list[bytes], requests: int,
                time_s: float) -> dict[str, Any]:
    """``n_clients`` threads, each sending one image at a time, until ``requests`` are answered or time is up."""
    url = server.grpc_url if protocol == "grpc" else server.http_url
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = [0]
    deadline = time.monotonic() + time_s

    def worker(seed: int) -> None:
        module, client = _client(protocol, url)
        try:
            k = seed
            while time.monotonic() < deadline:
                with lock:
                    if issued[0] >= requests:
                        return
                    issued[0] += 1
                data = images[k % len(images)]
                k += n_clients
                started = time.perf_counter()
                try:
                    client.infer("u2netp", _request(module, data)).as_numpy("MASK")
                except Exception as exc:  # reported, never retried
                    with lock:
                        errors.append(str(exc)[:200])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
        finally:
            client.close()

    module, probe = _client(protocol, url)
    before = _stats(probe, "u2netp_model", protocol)
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n_clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(time_s + 60)
    wall = time.perf_counter() - started
    after = _stats(probe, "u2netp_model", protocol)
    probe.close()
    inferences, executions = after[0] - before[0], after[1] - before[1]
    ms = sorted(x * 1e3 for x in latencies)
    return {"clients": n_clients, "answered": len(ms), "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "wall_s": round(wall, 2), "throughput_rps": round(len(ms) / wall, 2) if wall else None,
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p99_ms": round(ms[min(len(ms) - 1, int(np.ceil(0.99 * len(ms))) - 1)], 1) if ms else None,
            "mean_batch": round(inferences / executions, 2) if executions else None}


def in_process(model: Path, images: list[bytes], threads: int, requests: int, time_s: float) -> dict[str, Any]:
    """The same work without a server, one image at a time: decode, preprocess, network, postprocess."""
    from u2deploy.data import postprocess, preprocess
    from u2deploy.data.images import read_image
    from u2deploy.engines import open_runner

    ms = []
    deadline = time.monotonic() + time_s
    with tempfile.TemporaryDirectory(prefix="triton_load.") as tmp, open_runner(str(model), threads=threads) as runner:
        files = [Path(tmp) / f"{i}.img" for i in range(len(images))]
        for path, data in zip(files, images):
            path.write_bytes(data)
        size = runner.info.native_size
        spec = runner.info.spec
        for k in range(requests + 2):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            image = read_image(files[k % len(files)])
            d0 = runner.saliency(preprocess.fast([image], size, spec.mean, spec.std))
            postprocess.fast(d0, [image.shape[:2]])
            if k >= 2:  # two warm-up rounds
                ms.append((time.perf_counter() - started) * 1e3)
    ms.sort()
    return {"answered": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(ms[min(len(ms) - 1, int(np.ceil(0.99 * len(ms))) - 1)], 1),
            "throughput_rps": round(1e3 * len(ms) / sum(ms), 2)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import os

    from u2deploy.export.triton import export_triton
    from u2deploy.export.triton.server import LocalTriton

    images = _images(args.images)
    results: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    baseline = in_process(args.model, images, args.threads, min(args.requests, 60), args.time_s)
    print(f"in-process, one at a time: {baseline}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="triton_load.") as tmp_name:
        tmp = Path(tmp_name)
        python = args.server_python
        for batching in (True, False):
            repo = tmp / ("batched" if batching else "unbatched")
            export_triton([args.model], repo, name="u2netp", preprocess_in_server=True, model_backend="python",
                          dynamic_batching=batching, queue_delay_us=args.queue_delay_us, threads=args.threads,
                          instances=args.instances, max_batch=args.max_batch)
            with LocalTriton(repo, python=python, start_s=180) as server:
                run_clients(server, args.protocol, 1, images, 4, 60)  # warm-up, not reported
                for n in args.clients:
                    row = run_clients(server, args.protocol, n, images, args.requests, args.time_s)
                    row["dynamic_batching"] = batching
                    results.append(row)
                    print(f"dynamic_batching={batching} clients={n}: {row}", file=sys.stderr)
    return {"model": str(args.model), "protocol": args.protocol, "threads": args.threads, "in_process": baseline,
            "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "instances": args.instances, "queue_delay_us": args.queue_delay_us, "requests": args.requests,
            "images": "ECSSD 0801-1000" if _ecssd() else "generated", "cpu": _cpu(),
            "python": platform.python_version(),
            "results": results}


def _ecssd() -> bool:
    from u2deploy.data.samples import ecssd_root

    return ecssd_root() is not None


def _cpu() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = sorted(set(re.findall(r"\b(avx512_vnni|avx_vnni|amx_int8|avx2)\b", text)))
    import os

    return f"{name.group(1) if name else 'unknown'} [{' '.join(flags)}], {os.cpu_count()} CPUs"


def markdown(report: dict[str, Any]) -> str:
    lines = ["| dynamic batching | clients | answered | p50 ms | p99 ms | throughput img/s | mean batch | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    b = report["in_process"]
    lines.append(f"| (no server: in-process, one at a time) | 1 | {b['answered']} | {b['p50_ms']} | {b['p99_ms']} "
                 f"| {b['throughput_rps']} | 1 | 0 |")
    for r in report["results"]:
        lines.append(f"| {'on' if r['dynamic_batching'] else 'off'} | {r['clients']} | {r['answered']} | {r['p50_ms']} "
                     f"| {r['p99_ms']} | {r['throughput_rps']} | {r['mean_batch']} | {r['errors']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="A dynamic-batch ONNX (u2export onnx --dynamic-batch)")
    parser.add_argument("--clients", default="1,4,8", help="Concurrent clients, comma-separated")
    parser.add_argument("--requests", type=int, default=120, help="Requests per (mode, clients), at most")
    parser.add_argument("--time-s", type=float, default=60, help="Seconds per (mode, clients), at most")
    parser.add_argument("--images", type=int, default=16, help="Distinct images cycled through")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads of the network step")
    parser.add_argument("--instances", type=int, default=1, help="Instances of each model")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--server-python", type=Path, default=Path(sys.executable),
                        help="The Python of the server's python backend: with numpy 2 here, first run "
                             "`u2export triton-env DIR` (it downloads numpy<2) and pass DIR/bin/python3")
    parser.add_argument("--json", type=Path, help="Also write the figures here")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    if int(np.__version__.split(".")[0]) >= 2 and args.server_python.resolve() == Path(sys.executable).resolve():
        parser.error("this Python has numpy 2, which garbles the python backend's tensors: run `u2export "
                     "triton-env DIR` first and pass --server-python DIR/bin/python3")
    if max(args.clients) > 64 or args.requests > 10_000 or args.time_s > 600:
        parser.error("bounded: at most 64 clients, 10000 requests and 600 s per measurement")
    report = measure(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['cpu']}; {report['protocol']}; network step: {report['model']} via the python backend, "
          f"{report['threads']} threads, {report['instances']} instance(s); images: {report['images']}; "
          f"load average (1 min) before/after: {report['loadavg_1min_before_after']}")
    print(markdown(report))


if __name__ == "__main__":
    main()
