"""`u2bench latency`: statistics, the timing loop's rules, and short real runs (never timed assertions)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from u2deploy.bench import latency, paired
from u2deploy.bench.latency import LatencyOptions
from u2deploy.bench.stats import Stats, format_ms, percentile
from u2deploy.bench.timing import Step, time_step
from u2deploy.cli.bench import app
from u2deploy.errors import U2Error
from u2deploy.files import write_json
from u2deploy.model import DeployModel, U2Net

SIZE = 64
QUICK = ["--min-time-s", "0.5", "--warmup-s", "0.1", "--min-iters", "3"]
REQUIRED = {"model", "backend", "device", "precision", "batch", "size", "latency_ms", "throughput_ips", "fps",
            "hardware"}


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "u2netp_random.pth"
    torch.save(U2Net("small").state_dict(), path)
    return path


def _export_random_small(path: Path, size: int) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(DeployModel(U2Net("small")).eval(), torch.zeros(1, 3, size, size), str(path),
                          dynamo=False, opset_version=17, input_names=["input"], output_names=["saliency"])
    return path


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_random_small(tmp_path_factory.mktemp("onnx") / "small64.onnx", SIZE)


# ------------------------------------------------------------------------------------------ statistics

def test_nearest_rank_percentiles_are_samples() -> None:
    samples = list(range(1, 101))
    assert percentile(samples, 50) == 50
    assert percentile(samples, 90) == 90
    assert percentile(samples, 99) == 99
    assert percentile([7.0], 99) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2  # the smallest sample with ≥ 50 % at or below it


def test_stats_on_a_shuffled_list() -> None:
    rng = np.random.default_rng(1)
    samples = rng.permutation(np.arange(1.0, 201.0))
    stats = Stats.of(samples.tolist())
    assert (stats.n, stats.p50, stats.p90, stats.p99) == (200, 100.0, 180.0, 198.0)
    assert stats.mean == pytest.approx(samples.mean())
    assert stats.std == pytest.approx(samples.std(ddof=1))
    assert (stats.min, stats.max) == (1.0, 200.0)


def test_percentiles_are_refused_without_enough_samples() -> None:
    assert Stats.of([1.0] * 99).p99 is None
    assert Stats.of([1.0] * 100).p99 == 1.0
    nine = Stats.of(list(range(9)))
    assert nine.p90 is None and nine.p50 == 4
    single = Stats.of([3.0])
    assert single.p50 == 3.0 and single.std is None
    with pytest.raises(ValueError):
        Stats.of([])
    assert format_ms(None, 99) == "n/a (<100 runs)"
    assert format_ms(None, 90) == "n/a (<10 runs)"


class FakeClock:
    """Each call of the step advances time by 2 ms: the loop's rules become exact."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.calls += 1
        self.now += 0.002


def test_warmup_is_not_timed_and_both_minimums_hold() -> None:
    clock = FakeClock()
    samples = time_step(Step(clock.step, "fake"), lambda: None, warmup_s=0.0, min_time_s=0.0, min_iters=5,
                        clock=clock, cpu_clock=clock)
    assert samples.warmup_iters == 2 and len(samples.host_ms) == 5 and clock.calls == 7
    assert samples.host_ms == pytest.approx([2.0] * 5) and samples.cpu_ms == pytest.approx([2.0] * 5)
    assert samples.device_ms is None
    clock = FakeClock()
    samples = time_step(Step(clock.step, "fake"), lambda: None, warmup_s=0.01, min_time_s=0.1, min_iters=1,
                        clock=clock)
    assert samples.warmup_iters == 5 and len(samples.host_ms) == 50


def test_parsing_and_backend_rules(small_onnx: Path) -> None:
    assert latency.parse_batches("1,4,8") == (1, 4, 8)
    with pytest.raises(U2Error):
        latency.parse_batches("1,x")
    with pytest.raises(U2Error, match="cuda"):
        latency.open_for_timing("model.engine", LatencyOptions(device="cpu"))
    with pytest.raises(U2Error, match="--backend torch"):
        latency.open_for_timing(str(small_onnx), LatencyOptions(backend="torch"))
    with pytest.raises(U2Error, match="does not apply"):
        latency.open_for_timing(str(small_onnx), LatencyOptions(precision="int8"))
    with pytest.raises(U2Error, match="run on onnxruntime or openvino, not --backend tensorrt.*--device tensorrt"):
        latency.open_for_timing(str(small_onnx), LatencyOptions(backend="tensorrt"))
    with pytest.raises(U2Error, match="--compile does not apply to ONNX artifacts on ONNX Runtime"):
        latency.open_for_timing(str(small_onnx), LatencyOptions(compile=True))
    with pytest.raises(U2Error, match="--cuda-graphs needs --device cuda"):
        latency.open_for_timing("torch:small", LatencyOptions(cuda_graphs=True))
    with pytest.raises(U2Error, match="--backend nope: unknown backend .nope.; expected one of auto, torch, onnx"):
        latency.open_for_timing(str(small_onnx), LatencyOptions(backend="nope"))
    runner, _ = latency.open_for_timing(str(small_onnx), LatencyOptions())
    with runner:
        assert latency.resolve_size(runner, None) == (SIZE, SIZE)  # the file's fixed size wins
        with pytest.raises(U2Error, match="takes 64x64 only"):
            latency.resolve_size(runner, (320, 320))


def test_full_model_without_weights_is_timed_on_random_ones() -> None:
    runner, notes = latency.open_for_timing("torch:full", LatencyOptions())
    with runner:
        assert notes["weights"].startswith("random init")
        assert latency.resolve_size(runner, None) == (320, 320)  # the authors' checkpoints' size


def test_json_is_written_atomically(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    out = write_json(tmp_path / "sub" / "r.json", {"a": 1})
    assert json.loads(out.read_text()) == {"a": 1}
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]


# ----------------------------------------------------------------------------------------- real runs

def _check_result(result: dict, model: str, backend: str) -> None:
    assert REQUIRED <= result.keys()
    assert result["model"] == model and result["backend"] == backend and result["device"] == "cpu"
    assert result["size"] == [SIZE, SIZE] and result["precision"] == "fp32"
    lat = result["latency_ms"]
    assert {"p50", "p90", "p99", "mean", "std"} <= lat.keys()
    assert lat["n"] >= 3 and lat["p50"] > 0 and result["fps"] > 0 and result["throughput_ips"] > 0
    assert result["cpu_time_ms"]["n"] == lat["n"]
    if lat["n"] < 100:
        assert lat["p99"] is None
    assert result["hardware"]["cpu"]["model"] and result["hardware"]["threads_used"] >= 1
    assert {"python", "torch", "numpy", "onnxruntime"} <= result["hardware"]["software"].keys()
    assert result["memory"]["host_peak_rss_mib"] > 0


def test_torch_run_writes_json_and_plot(tmp_path: Path, small_weights: Path) -> None:
    out, png = tmp_path / "lat.json", tmp_path / "lat.png"
    res = CliRunner().invoke(app, ["latency", "--model", "torch:small", "--weights", str(small_weights),
                                   "--size", str(SIZE), "--batch", "1,2", "--threads", "1", *QUICK,
                                   "--json", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "p50 ms" in res.output and "n/a (<100 runs)" in res.output
    results = json.loads(out.read_text())
    assert [r["batch"] for r in results] == [1, 2]
    for r in results:
        _check_result(r, "torch:small", "torch")
        assert r["hardware"]["threads_used"] == 1 and r["mode"] == "model"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_onnxruntime_run(tmp_path: Path, small_onnx: Path) -> None:
    out = tmp_path / "ort.json"
    res = CliRunner().invoke(app, ["latency", "--model", str(small_onnx), *QUICK, "--json", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())  # one result: an object, not a list
    _check_result(result, str(small_onnx), "onnxruntime")
    assert result["options"]["execution_provider"] == "CPUExecutionProvider"
    assert result["options"]["threads"] >= 1 and result["options"]["qdq_in_float"] is False


def test_end_to_end_times_each_stage(tmp_path: Path, small_weights: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(40, 50, 3), (30, 20, 3)]):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(images / f"{i}.png")
    opts = LatencyOptions(weights=str(small_weights), size=(SIZE, SIZE), warmup_s=0.0, min_time_s=0.0,
                          min_iters=3, end_to_end=True, images=str(images), threads=1)
    (result,) = latency.run_latency(["torch:small"], opts)
    assert result["mode"] == "end-to-end"
    assert set(result["stages_ms"]) == {"decode", "preprocess", "infer", "postprocess"}
    assert all(v > 0 for v in result["stages_ms"].values())


# ------------------------------------------------------------------------------------------ paired mode

def test_paired_rounds_alternate_and_ratios_are_per_round() -> None:
    clock = FakeClock()
    order: list[str] = []

    def step(name: str, ms: float) -> Step:
        def call() -> None:
            order.append(name)
            clock.now += ms / 1e3
        return Step(call, name)

    steps = [(step("a", 2.0), lambda: None), (step("b", 6.0), lambda: None)]
    times, duration = paired.interleave(steps, k=2, min_time_s=0.0, clock=clock)
    assert times[0] == pytest.approx([2.0] * 5) and times[1] == pytest.approx([6.0] * 5)
    assert order[:8] == list("aabbbbaa")  # the order reverses every other round
    assert duration == pytest.approx(0.08)
    times, _ = paired.interleave(steps, k=2, min_time_s=0.1, clock=clock)
    assert len(times[0]) == 7  # 16 ms rounds until 0.1 s have passed
    assert paired.calls_per_round([5.0, 20.0]) == 15 and paired.calls_per_round([1000.0]) == 1


def test_paired_same_model_twice(small_onnx: Path) -> None:
    opts = LatencyOptions(warmup_s=0.05, min_time_s=0.0, threads=1)
    base, other = paired.run_paired([str(small_onnx), str(small_onnx)], opts, round_s=0.02)
    assert base["ratio"] == base["ratio_min"] == base["ratio_max"] == 1.0
    assert 0.5 < other["ratio_min"] <= other["ratio"] <= other["ratio_max"] < 2.0
    for r in (base, other):
        assert r["mode"] == "paired" and r["baseline"] == str(small_onnx) and r["backend"] == "onnxruntime"
        assert r["rounds"] == len(r["round_ms"]) == paired.MIN_ROUNDS and r["calls_per_round"] >= 1
        assert r["threads"] == 1 and r["size"] == [SIZE, SIZE] and r["batch"] == 1 and r["median_ms"] > 0
        assert {"load_average_start", "load_average_end", "hardware", "duration_s"} <= r.keys()


def test_paired_refusals(tmp_path: Path, small_onnx: Path) -> None:
    opts = LatencyOptions(warmup_s=0.0, min_time_s=0.0)
    with pytest.raises(U2Error, match="at least two"):
        paired.run_paired([str(small_onnx)], opts)
    with pytest.raises(U2Error, match="--images .*: no such folder"):
        paired.run_paired([str(small_onnx)] * 2, LatencyOptions(end_to_end=True, images=str(tmp_path / "no")))
    small32 = _export_random_small(tmp_path / "small32.onnx", 32)
    with pytest.raises(U2Error, match="one input size") as err:
        paired.run_paired([str(small_onnx), str(small32)], opts)
    assert "\n" not in str(err.value)


def test_paired_end_to_end_interleaves_real_image_pipelines(tmp_path: Path, small_onnx: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i, shape in enumerate([(40, 50, 3), (30, 20, 3)]):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8)).save(images / f"{i}.png")
    opts = LatencyOptions(warmup_s=0.0, min_time_s=0.0, end_to_end=True, images=str(images), threads=1)
    results = paired.run_paired([str(small_onnx)] * 2, opts)
    assert [r["mode"] for r in results] == ["paired end-to-end"] * 2 and results[0]["ratio"] == 1.0
    assert "decode" in results[0]["timed"] and results[1]["rounds"] >= paired.MIN_ROUNDS


def test_paired_cli(tmp_path: Path, small_onnx: Path) -> None:
    out = tmp_path / "paired.json"
    model = ["--model", str(small_onnx)]
    res = CliRunner().invoke(app, ["latency", *model, *model, "--paired", "--threads", "1", "--warmup-s", "0.05",
                                   "--min-time-s", "0", "--json", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:3] == ["artifact", "median", "ms"]
    first, second = (line for line in lines if line.startswith(small_onnx.name))
    assert " 1.000× " in first and first.rstrip().endswith(" 5")
    assert 0.5 < float(second.split("×")[0].split()[-1]) < 2.0
    assert any(line.startswith("baseline: small64.onnx") and "threads 1" in line and "load average" in line
               for line in lines)
    assert [r["ratio"] for r in json.loads(out.read_text())][0] == 1.0
    for extra in (["--end-to-end", "--images", str(tmp_path / "none")], ["--plot", str(tmp_path / "p.png")],
                  ["--batch", "1,2"], []):
        models = model if not extra else model * 2
        res = CliRunner().invoke(app, ["latency", *models, "--paired", *extra])
        assert isinstance(res.exception, U2Error) and res.exit_code == 1, (extra, res.output)
