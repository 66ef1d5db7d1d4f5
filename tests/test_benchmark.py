"""`u2bench benchmark`: every artifact built through the u2export stages, gated on parity with PyTorch,
timed in one paired run, and the fastest one that passes recommended; caches reused on a rerun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from u2deploy.bench.benchmark import ROW_KEYS, BenchmarkOptions, Row, recommend
from u2deploy.bench.benchmark.cache import ArtifactCache
from u2deploy.bench.benchmark.options import step_commands
from u2deploy.bench.benchmark.outdir import LEDGER
from u2deploy.bench.benchmark.targets import Target, all_names, default_names, parse_formats, unavailable
from u2deploy.bench.benchmark.timing import latency_options
from u2deploy.cli.bench import app
from u2deploy.data.samples import ecssd_root
from u2deploy.errors import U2Error
from u2deploy.formats import backend, by_key

ECSSD = ecssd_root() or Path("ECSSD-not-found")
needs_ecssd = pytest.mark.skipif(ecssd_root() is None, reason="needs the ECSSD images and masks (../shared/datasets)")

# 64×64, six held-out images, eight calibration images from 0001-0800, a fraction of a second of timing.
FAST = ["--size", "64", "--subset", "0801-0806", "--calib", str(ECSSD / "images"), "--calib-subset", "0001-0008",
        "--calib-num", "8", "--min-time-s", "0.2", "--warmup-s", "0.05"]
# The first run: ONNX FP32 and INT8, an OpenVINO IR where OpenVINO is installed, and two that cannot run here.
FIRST_FORMATS = "onnx:fp32,onnx:int8,openvino:fp32,trt:fp16,torch:bf16"


def _invoke(*args: str):
    return CliRunner().invoke(app, ["benchmark", "--data", str(ECSSD), *FAST, *args])


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.iterdir()) if p.suffix in (".onnx", ".xml", ".bin")}


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    if ecssd_root() is None:
        pytest.skip("needs the ECSSD images and masks (../shared/datasets)")
    folder = tmp_path_factory.mktemp("benchmark")
    out = folder / "artifacts"
    result = _invoke("--formats", FIRST_FORMATS, "--out", str(out), "--json", str(folder / "b.json"),
                     "--report", str(folder / "r.md"))
    assert result.exit_code == 0, result.output
    return folder, out, result


# ------------------------------------------------------------------------------- without any data

def test_format_names_come_from_the_format_table() -> None:
    names = default_names()
    assert names[:4] == ["torch:fp32", "onnx:fp32", "onnx:fp16", "onnx:int8"]
    assert {"openvino:fp32", "openvino:int8", "trt:fp16", "trt:int8"} <= set(names)
    assert set(names) <= set(all_names())
    targets = parse_formats("onnx:int8, OpenVINO:FP32,onnx:int8")
    assert [t.name for t in targets] == ["torch:fp32", "onnx:fp32", "onnx:int8", "openvino:fp32"]


@pytest.mark.parametrize(("name", "words"), [
    ("onnx:fp8", "ONNX artifacts are fp32, fp16, int8"),
    ("tflite:int8", "unknown format 'tflite'"),
    ("onnx", "expected FORMAT:PRECISION"),
    (" , ", "no FORMAT:PRECISION name"),
])
def test_a_bad_format_name_is_one_line(name: str, words: str) -> None:
    with pytest.raises(U2Error, match=words) as caught:
        parse_formats(name)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("--formats ")


def test_the_cli_says_so_in_one_line_before_any_work(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "u2deploy.cli.bench", "benchmark", "--data", str(tmp_path),
                          "--formats", "onnx:fp32,onnx:fp8", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == ["u2bench: error: --formats onnx:fp8: ONNX artifacts are fp32, fp16, int8"], run.stderr
    assert not (tmp_path / "out").exists()


def test_what_cannot_run_here_says_why() -> None:
    from u2deploy import hardware

    def why(name: str, calib: Path | None = Path("/nonexistent")) -> str | None:
        key, precision = name.split(":")
        return unavailable(Target(by_key(key), precision), "cpu", calib)

    assert "FP32 reference only" in why("torch:bf16")
    assert why("torch:fp32") is None and why("onnx:fp32") is None
    assert "INT8 needs calibration images: pass --calib DIR" in why("onnx:int8")
    if hardware.gpu() is None:
        assert why("trt:fp16").startswith("needs a CUDA GPU and TensorRT; this machine has no CUDA GPU")
    on_gpu = unavailable(Target(by_key("openvino"), "fp32"), "cuda", None)
    missing = f"OpenVINO is not installed ({backend('openvino').install})"
    assert on_gpu in ("OpenVINO runs on cpu, not --device cuda", missing)


def _row(name: str, p50: float | None, passed: bool | None, status: str = "ok") -> Row:
    key, precision = name.split(":")
    return Row(name, key, precision, by_key(key).backends[0], "cpu", status=status,
                 artifact=None if status.startswith("skipped") else f"/out/{name}", latency_ms_p50=p50,
                 passed=passed, ratio=None if p50 is None else p50 / 30)


def test_the_recommendation_is_the_fastest_passing_artifact() -> None:
    rows = [_row("torch:fp32", 5.0, None, "reference"), _row("onnx:fp32", 30.0, True),
            _row("onnx:int8", 12.0, True), _row("openvino:int8", 9.0, False, "failed: |ΔMAE| 0.006 > 0.005"),
            _row("trt:fp16", None, None, "skipped: no CUDA GPU"), _row("onnx:fp16", 11.0, True)]
    assert recommend(rows).name == "onnx:fp16"
    rows[-1].passed = False
    assert recommend(rows).name == "onnx:int8"
    for row in rows:
        row.passed = False if row.passed else row.passed
    assert recommend(rows) is None


def test_the_cache_notices_a_changed_file_or_key(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    artifact = tmp_path / "m.onnx"
    artifact.write_bytes(b"model")
    key = {"stage": "onnx", "size": [64, 64]}
    cache.store(artifact, key, 1.0)
    assert ArtifactCache(tmp_path).hit(artifact, key)
    assert not ArtifactCache(tmp_path).hit(artifact, {**key, "size": [96, 96]})
    artifact.write_bytes(b"other")
    assert not ArtifactCache(tmp_path).hit(artifact, key)


def test_the_users_weights_reach_the_pytorch_timing_and_the_step_commands(tmp_path: Path) -> None:
    weights = tmp_path / "w.pth"
    opts = BenchmarkOptions(data=tmp_path, weights=weights, min_time_s=1, warmup_s=0.5)
    model = latency_options(opts, (64, 64))
    assert model.weights == str(weights) and not model.end_to_end  # open_for_timing hands it to torch:* only
    e2e = latency_options(opts, (64, 64), tmp_path)
    assert e2e.end_to_end and e2e.images == str(tmp_path) and e2e.weights == str(weights)
    rows = [_row("torch:fp32", None, None, "reference"), _row("onnx:fp32", None, True)]
    parity, latency, end_to_end = step_commands(opts, rows, (64, 64), tmp_path)
    assert parity.startswith("u2bench parity --variant small --weights ") and "--candidates /out/onnx:fp32" in parity
    assert latency.startswith("u2bench latency --model /out/onnx:fp32 --model torch:small --weights ")
    assert "--paired" in latency and end_to_end == f"{latency} --end-to-end --images {tmp_path}"


# ------------------------------------------------------------------------------------ on ECSSD

@needs_ecssd
def test_one_table_json_rows_and_the_recommendation(first) -> None:
    folder, out, result = first
    data = json.loads((folder / "b.json").read_text())
    assert set(data) >= {"hardware", "rows", "recommended"} and data["hardware"]["cpu"]["model"]
    rows = {row["name"]: row for row in data["rows"]}
    for row in data["rows"]:
        assert list(row)[:len(ROW_KEYS)] == list(ROW_KEYS), row
    ref = rows["torch:fp32"]
    assert ref["status"] == "reference" and ref["artifact"] == "torch:small" and ref["pass"] is None
    assert ref["delta_maxF"] is None and ref["latency_ms_p50"] > 0 and ref["peak_rss_bytes"] > 0
    for name in ("trt:fp16", "torch:bf16"):
        assert rows[name]["status"].startswith("skipped: ") and len(rows[name]["status"]) > 12
        assert rows[name]["pass"] is None and rows[name]["latency_ms_p50"] is None
        assert f"⏭ {name}: skipped: " in result.output
    assert data["timing"]["model"]["mode"] == "paired"  # one run_paired call each, all artifacts interleaved
    assert data["timing"]["end_to_end"]["mode"] == "paired end-to-end"
    assert data["timing"]["end_to_end"]["rounds"] >= 5 and "decode" in data["timing"]["end_to_end"]["timed"]
    base = rows["onnx:fp32"]
    assert base["pass"] is True and base["ratio"] == 1.0 and base["map_mean_abs"] < 1e-4
    timed = [row for row in data["rows"] if row["latency_ms_p50"] is not None and row["status"] != "reference"]
    assert {row["name"] for row in timed} >= {"onnx:fp32", "onnx:int8"}
    for row in timed:
        assert row["size_bytes"] > 0 and row["pass"] in (True, False) and row["peak_rss_bytes"] > 0
        assert row["ratio_min"] <= row["ratio"] <= row["ratio_max"] and row["e2e_latency_ms_p50"] > 0
        assert Path(row["artifact"]).is_file() and Path(row["artifact"]).parent == out
    fastest = min((row for row in timed if row["pass"]), key=lambda row: row["latency_ms_p50"])
    assert data["recommended"] == fastest["artifact"]
    assert f"**ship {fastest['artifact']}**" in result.output and "rebuild: u2export onnx" in result.output
    assert rows["onnx:int8"]["build_command"].endswith(f"-o {rows['onnx:int8']['artifact']}")
    assert (out / "u2netp_64x64.calib.json").is_file()  # the quantize stage's ranges, for the rerun
    # --out's ledger lists every file, link and folder in it: the benchmark wrote all of them, so a rerun may
    # replace them (tests/test_benchmark_out.py: anything else there is refused)
    ledger = json.loads((out / LEDGER).read_text())["entries"]
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*")} - {LEDGER}
    assert set(ledger) == on_disk and ledger["calib_0001-0008"]["kind"] == "dir"
    assert {ledger[f"calib_0001-0008/{i:04d}.jpg"]["kind"] for i in range(1, 9)} == {"link"}


@needs_ecssd
def test_the_report_has_the_table_plots_and_commands(first) -> None:
    folder, _, _ = first
    text = (folder / "r.md").read_text()
    assert "| artifact | format | precision |" in text and "**ship " in text and "u2bench benchmark" in text
    assert "u2bench parity --variant small" in text and "--paired" in text and "Measured on " in text
    assert " --paired " in text and " --end-to-end --images " in text  # the end-to-end timing step, too
    for png in ("r_pr.png", "r_latency.png"):
        assert f"]({png})" in text and (folder / png).stat().st_size > 1000


@needs_ecssd
def test_a_rerun_reuses_every_artifact(first) -> None:
    folder, out, _ = first
    before = _mtimes(out)
    result = _invoke("--formats", FIRST_FORMATS, "--out", str(out), "--json", str(folder / "again.json"),
                     "--no-rss", "--no-end-to-end")
    assert result.exit_code == 0, result.output
    again = json.loads((folder / "again.json").read_text())
    assert _mtimes(out) == before and "reusing" in result.output
    assert all(row["cached"] for row in again["rows"] if row["artifact"] and row["status"] != "reference")
    assert all(row["peak_rss_bytes"] is None for row in again["rows"])  # --no-rss: null, never a stale number


@needs_ecssd
@pytest.mark.isa
def test_the_gate_judges_int8_as_this_cpu_computes_it(tmp_path: Path) -> None:
    """The gate on the CPU's own int8 kernels (in the AVX2 lane, an emulated AVX2-only CPU's; timing there is
    QEMU's and means nothing, so it is kept to its minimum): ONNX Runtime INT8 passes at the table's bounds."""
    result = _invoke("--formats", "onnx:fp32,onnx:int8", "--out", str(tmp_path / "out"), "--no-rss",
                     "--no-end-to-end", "--min-time-s", "0", "--warmup-s", "0", "--json", str(tmp_path / "b.json"))
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads((tmp_path / "b.json").read_text())["rows"]}
    int8 = rows["onnx:int8"]
    assert int8["pass"] is True and int8["status"] == "ok", int8
    assert 0 < int8["map_mean_abs"] < 0.01 and abs(int8["delta_maxF"]) < 0.01, int8


@needs_ecssd
def test_a_failing_artifact_is_never_recommended(first) -> None:
    folder, out, _ = first
    quick = ["--formats", "onnx:fp32,onnx:int8", "--out", str(out), "--no-rss", "--no-end-to-end"]
    result = _invoke(*quick, "--max-delta-maxf", "0", "--max-delta-mae", "0", "--json", str(folder / "zero.json"))
    data = json.loads((folder / "zero.json").read_text())
    rows = {row["name"]: row for row in data["rows"]}
    assert rows["onnx:int8"]["pass"] is False and rows["onnx:int8"]["status"].startswith("failed: |Δ")
    assert rows["onnx:int8"]["latency_ms_p50"] is not None  # timed all the same: the table shows what it cost
    chosen = [row for row in data["rows"] if row["artifact"] == data["recommended"]]
    assert data["recommended"] is None or (chosen[0]["pass"] is True and chosen[0]["delta_mae"] == 0)
    assert result.exit_code == (0 if data["recommended"] else 1), result.output

    result = _invoke(*quick, "--max-delta-maxf", "-1", "--json", str(folder / "none.json"))
    data = json.loads((folder / "none.json").read_text())
    assert result.exit_code == 1 and data["recommended"] is None and "**ship nothing**" in result.output
    assert all(row["pass"] in (False, None) for row in data["rows"])


@needs_ecssd
def test_the_browser_row_is_built_gated_and_timed_through_its_row(tmp_path: Path) -> None:
    """web:int8 is built from onnx:int8, which its row names as its source (built on demand, not a row of its
    own), gated against PyTorch in headless Chromium and timed; where the browser is missing, it says why."""
    out = tmp_path / "artifacts"
    result = _invoke("--formats", "web:int8", "--out", str(out), "--json", str(tmp_path / "b.json"), "--no-rss",
                     "--no-end-to-end")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads((tmp_path / "b.json").read_text())["rows"]}
    assert set(rows) == {"torch:fp32", "onnx:fp32", "web:int8"}
    web = rows["web:int8"]
    why = backend("browser").why_not_here()
    if why:
        assert web["status"] == f"skipped: {why}"
        return
    assert web["pass"] is True and web["latency_ms_p50"] > 0, web
    assert Path(web["artifact"]) == out / "u2netp_64x64_int8_web" and (out / "u2netp_64x64_int8_web").is_dir()
    commands = [c.split()[:2] for c in web["build_command"].split(" && ")]
    assert commands == [["u2export", "onnx"], ["u2export", "quantize"], ["u2export", "web"]]
    assert (out / "u2netp_64x64_int8.onnx").is_file()  # its source, built on demand
