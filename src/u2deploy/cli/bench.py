"""`u2bench`: predict, evaluate, compare with PyTorch, and time artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..formats import BACKEND_NAMES, FORMATS
from ..plural import plural
from ..sizes import parse_size
from ._common import new_app, run

BACKEND_HELP = (f"auto (the format's default) or one of {', '.join(BACKEND_NAMES)}; "
                + "; ".join(f"{f.name} runs on {' or '.join(f.backends)}" for f in FORMATS if len(f.backends) > 1)
                + ".")
MODEL_HELP = ("torch:full, torch:small, a " + ", ".join(f.suffix for f in FORMATS if f.suffix not in ("", "/"))
              + " file, or a u2export web site folder")

app = new_app("u2bench", "Run, evaluate and time U²-Net artifacts on PyTorch, ONNX Runtime, OpenVINO, TensorRT "
                          "and in the browser.")


@app.command("eval")
def eval_command(
    pred: Annotated[Path, typer.Option("--pred", help="Folder of predicted maps, matched to masks by stem.")],
    gt: Annotated[Path, typer.Option("--gt", help="Folder of masks, or a dataset root (ECSSD, DUTS, …).")],
    images_dir: Annotated[
        Path | None, typer.Option("--images-dir", help="Only the masks that have an image here.")] = None,
    subset: Annotated[str | None, typer.Option("--subset", help="Stem range, e.g. 0801-1000.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="First N matched pairs.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here (JSON).")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Draw PR and Fβ curves here (PNG, PDF, SVG).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes that score maps.")] = 1,
) -> None:
    """Score a folder of saliency maps: maxFβ, MAE, weighted Fβ, S-measure, relaxed boundary Fβ."""
    from ..bench.evaluate import evaluate_folder, format_table, report
    from ..bench.plots import check_plot_path, plot_pr_curves
    from ..files import check_destinations, write_json

    check_destinations(json_out)
    if plot is not None:
        check_plot_path(plot)
    result = evaluate_folder(pred, gt, images_dir=images_dir, subset=subset, limit=limit, workers=workers)
    for _, why in result.failed:
        typer.echo(f"u2bench: {why}; not scored", err=True)
    typer.echo(format_table([result]))
    if json_out is not None:
        typer.echo(f"results: {write_json(json_out, report([result]))}")
    if plot is not None:
        title = f"{result.dataset}, n={result.n}"
        typer.echo(f"curves: {plot_pr_curves([result.curve()], plot, title=title)}")
    if result.failed:
        typer.echo(f"u2bench: {len(result.failed)} of {result.n + len(result.failed)} predictions could not be "
                   "scored (listed above); the metrics cover the rest", err=True)
        raise typer.Exit(1)


@app.command("latency")
def latency_command(
    models: Annotated[list[str], typer.Option("--model", help=f"{MODEL_HELP}; repeat to compare.")],
    weights: Annotated[str | None, typer.Option("--weights", help="Checkpoint for torch:*.")] = None,
    backend: Annotated[str, typer.Option("--backend", help=BACKEND_HELP)] = "auto",
    device: Annotated[str | None, typer.Option(
        "--device", help="cpu or cuda (default: cpu; engines: cuda); ONNX Runtime also tensorrt (its TensorRT EP).")
                      ] = None,
    precision: Annotated[str | None, typer.Option(
        "--precision", help="fp32, fp16, bf16 (PyTorch autocast); exported files keep their own.")] = None,
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes to sweep, e.g. 1,4,8.")] = "1",
    size: Annotated[str | None, typer.Option(
        "--size", help="N or HxW (default: the artifact's fixed size, else the weights' own).")] = None,
    warmup_s: Annotated[float, typer.Option("--warmup-s", min=0, help="Untimed warm-up seconds.")] = 2.0,
    min_time_s: Annotated[float, typer.Option("--min-time-s", min=0, help="Timed seconds, at least.")] = 5.0,
    min_iters: Annotated[int, typer.Option("--min-iters", min=1, help="Timed calls, at least.")] = 10,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads (all).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here (JSON).")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Bar chart of p50/p90 per batch (PNG).")] = None,
    end_to_end: Annotated[bool, typer.Option(
        "--end-to-end", help="Time decode + preprocess + inference + postprocess on real images.")] = False,
    images: Annotated[str | None, typer.Option("--images", help="Image folder for --end-to-end.")] = None,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="PyTorch: NHWC layout.")] = False,
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs", help="PyTorch CUDA: replay a graph.")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="PyTorch: torch.compile the model.")] = False,
    tf32: Annotated[bool | None, typer.Option(
        "--tf32/--no-tf32", help="PyTorch CUDA: cuDNN convolutions in TF32 (default: on).")] = None,
    hint: Annotated[str | None, typer.Option(
        "--hint", help="OpenVINO: its latency or throughput performance hint (default: latency).")] = None,
    claims: Annotated[bool, typer.Option("--claims", help="Also print the paper-claims check.")] = False,
    paired: Annotated[bool, typer.Option(
        "--paired", help="Alternate the models in short rounds and print each one's time relative to the first "
                         "(ratios from one run, robust to a noisy machine).")] = False,
) -> None:
    """Latency (p50/p90/p99, mean ± std), throughput and peak memory of one or more artifacts."""
    from ..bench import claims as claims_check
    from ..bench.latency import LatencyOptions, parse_batches, run_latency
    from ..bench.plots import check_plot_path
    from ..bench.report import latency_text, paired_text, plot_latency
    from ..errors import U2Error
    from ..files import check_destinations, write_json

    check_destinations(json_out)
    if plot is not None and not paired:
        check_plot_path(plot)
    opts = LatencyOptions(
        backend=backend, device=device, precision=precision, batches=parse_batches(batch),
        size=parse_size(size), weights=weights, warmup_s=warmup_s, min_time_s=min_time_s, min_iters=min_iters,
        threads=threads, end_to_end=end_to_end, images=images, channels_last=channels_last,
        cuda_graphs=cuda_graphs, compile=compile_, tf32=tf32, hint=hint)
    if paired:
        from ..bench.paired import run_paired

        if plot is not None or claims:
            raise U2Error("--paired prints ratios only; drop --plot and --claims")
        results = run_paired(models, opts)
        typer.echo(paired_text(results))
        if json_out is not None:
            typer.echo(f"results: {write_json(json_out, results)}")
        return
    results = run_latency(models, opts)
    typer.echo(latency_text(results))
    if claims:
        size_hw = tuple(results[0]["size"])
        local = claims_check.measure_ceilings(results[0]["device"])
        check = claims_check.check(size=size_hw, measured=results, local=local)
        typer.echo("\n" + claims_check.render(check))
    if json_out is not None:
        typer.echo(f"results: {write_json(json_out, results[0] if len(results) == 1 else results)}")
    if plot is not None:
        typer.echo(f"plot: {plot_latency(results, plot)}")


@app.command("claims")
def claims_command(
    size: Annotated[str, typer.Option("--size", help="N or HxW; the paper's figures are at 320.")] = "320",
    measure: Annotated[bool, typer.Option("--measure/--no-measure",
                                          help="Also time both variants here at batch 1.")] = True,
    device: Annotated[str, typer.Option("--device", help="Where to measure: cpu or cuda.")] = "cpu",
    weights: Annotated[str | None, typer.Option("--weights", help="Checkpoint (else embedded or random).")
                       ] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads (all).")] = None,
    warmup_s: Annotated[float, typer.Option("--warmup-s", min=0, help="Untimed seconds before timing.")] = 1.0,
    min_time_s: Annotated[float, typer.Option("--min-time-s", min=0, help="Timed seconds per variant.")] = 3.0,
    min_iters: Annotated[int, typer.Option("--min-iters", min=1, help="Timed calls per variant, at least.")] = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the check here (JSON).")] = None,
) -> None:
    """The paper's 30/40 FPS next to FLOPs, bytes, roofline floors and a measurement on this machine."""
    from ..bench import claims as claims_check
    from ..bench.latency import LatencyOptions
    from ..files import check_destinations, write_json

    check_destinations(json_out)
    size_hw = parse_size(size)
    opts = LatencyOptions(device=device, weights=weights, threads=threads, warmup_s=warmup_s,
                          min_time_s=min_time_s, min_iters=min_iters)
    report, _ = claims_check.run(size_hw, measure, opts)  # type: ignore[arg-type]
    typer.echo(claims_check.render(report))
    if json_out is not None:
        typer.echo(f"results: {write_json(json_out, report)}")


@app.command("int8-ceiling")
def int8_ceiling_command(
    threads: Annotated[int, typer.Option("--threads", min=1, help="ONNX Runtime intra-op threads.")] = 2,
    min_time_s: Annotated[float, typer.Option(
        "--min-time-s", min=0, help="Timed seconds per convolution (at least 15 rounds).")] = 6.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here (JSON).")] = None,
) -> None:
    """INT8/FP32 speed of single convolutions here: the ratio a whole INT8 model is judged against."""
    from ..bench import int8_ceiling
    from ..files import check_destinations, write_json

    check_destinations(json_out)
    result = int8_ceiling.measure(threads, min_time_s)
    typer.echo(int8_ceiling.render(result))
    if json_out is not None:
        typer.echo(f"results: {write_json(json_out, result)}")


@app.command("predict")
def predict_command(
    model: Annotated[str, typer.Option("--model", help=f"{MODEL_HELP}.")],
    images: Annotated[list[Path], typer.Option("--images", help="Image folder or files (repeatable).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for <stem>.png masks.")],
    weights: Annotated[str | None, typer.Option("--weights", help="Checkpoint for torch:*.")] = None,
    backend: Annotated[str, typer.Option("--backend", help=BACKEND_HELP)] = "auto",
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Also images in subfolders; OUT mirrors the folder tree.")] = False,
    preprocess_mode: Annotated[str, typer.Option(
        "--preprocess", help="fast (deployment) or reference (the authors' script, exactly).")] = "fast",
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Binary masks: 255 where the saliency is at least T (0-1), else 0.")] = None,
    cutout: Annotated[bool, typer.Option("--cutout", help="Also write RGBA cut-outs to OUT/cutouts/.")] = False,
    background: Annotated[str | None, typer.Option(
        "--background", help="Cut-outs on this colour (white, '#00ff00' …) as JPEG; implies --cutout.")] = None,
    cutout_format: Annotated[str | None, typer.Option(
        "--cutout-format", help="png (default), jpg (needs --background) or webp.")] = None,
    size: Annotated[str | None, typer.Option("--size", help="N or HxW (default: the artifact's).")] = None,
    batch: Annotated[int | None, typer.Option("--batch", min=1, help=(
        "Images per call (dynamic-batch artifacts; default 1 with concurrent --streams, else 8)."))] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="CPU threads for inference, all streams together (default: all cores).")] = None,
    streams: Annotated[int | None, typer.Option(
        "--streams", min=1, help="Concurrent inference calls, ONNX Runtime on the CPU (default: 2).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace masks/cut-outs already in OUT (input images are never replaced).")] = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Keep outputs already in OUT and skip their images (resume a run).")] = False,
    ray_address: Annotated[str | None, typer.Option(
        "--ray", help="Run on a Ray cluster: its ADDRESS, auto (RAY_ADDRESS or this node's), or local (start Ray "
                      "here, on 127.0.0.1). Paths must be on a filesystem every node sees (docs/ray.md).")] = None,
    ray_actors: Annotated[int | None, typer.Option(
        "--ray-actors", min=1, help="With --ray: at most N inference actors (default: the cluster's CPUs, "
                                    "or GPUs with --device cuda, over --ray-cpus-per-actor).")] = None,
    ray_cpus: Annotated[int | None, typer.Option(
        "--ray-cpus-per-actor", min=1, help="With --ray: CPUs (inference threads) per actor (default: 1).")] = None,
) -> None:
    """Saliency masks (8-bit PNG, original size) and cut-outs for a folder of images, from any artifact."""
    import sys

    from tqdm import tqdm

    from ..bench import predict as p
    from ..data.images import image_tree
    from ..engines import open_runner
    from ..errors import U2Error

    def say(msg: str) -> None:  # through tqdm, so that a line never garbles the progress bar
        tqdm.write(f"u2bench: {msg}", file=sys.stderr)

    if ray_address is None and (ray_actors is not None or ray_cpus is not None):
        raise U2Error("--ray-actors and --ray-cpus-per-actor go with --ray ADDRESS|auto|local")
    if ray_address is not None and threads is not None:
        raise U2Error("--threads: with --ray, each actor runs --ray-cpus-per-actor threads")
    hw = parse_size(size)
    p.check_threshold(threshold)
    color = p.parse_color(background)
    suffix = p.cutout_suffix(cutout_format, color)
    if ray_address is None:
        n_streams, per_stream = p.inference_split(model, device, threads=threads, streams=streams, backend=backend)
    scan_skipped: list[tuple[Path, str]] = []
    try:
        found = image_tree([str(i) for i in images], recursive=recursive, skipped=scan_skipped, exclude=[output])
    finally:
        for entry, why in scan_skipped:
            say(f"{entry}: {why}; skipped")
    paths = [path for path, _ in found]
    plan = p.plan_outputs(paths, output, cutout=cutout or color is not None or cutout_format is not None,
                          overwrite=overwrite, skip_existing=skip_existing, subdirs=[sub for _, sub in found],
                          cutout_suffix=suffix)
    try:
        if ray_address is not None:
            from ..distributed.predict import RayOptions, predict_on_ray

            report = predict_on_ray(plan, RayOptions(ray_address, ray_actors, ray_cpus or 1), model=model,
                                    backend=backend, device=device, weights=weights, mode=preprocess_mode, size=hw,
                                    batch=batch, streams=streams, threshold=threshold, background=color,
                                    on_error=say, on_start=say)
        else:
            with open_runner(model, backend, weights=weights, device=device, threads=per_stream) as runner:
                report = p.predict(runner, paths, output, mode=preprocess_mode, size=hw, batch=batch, plan=plan,
                                   on_error=say, threshold=threshold, background=color, streams=n_streams)
    except KeyboardInterrupt as exc:
        written = len(exc.report.written) if isinstance(exc, p.PredictInterrupted) else 0
        say(f"interrupted: {plural(written, 'mask')} written to {output} and kept"
            + (" · rerun with --skip-existing to resume" if written else ""))
        raise typer.Exit(130) from None
    typer.echo(report.summary(output, len(scan_skipped)))
    if report.failed:
        raise typer.Exit(1)


@app.command("parity")
def parity_command(
    data: Annotated[Path, typer.Option("--data", help="Dataset root (ECSSD, DUTS, …) or image folder.")],
    variant: Annotated[str, typer.Option("--variant", help="full or small: the PyTorch reference.")] = "small",
    weights: Annotated[str | None, typer.Option("--weights", help="Checkpoint (default: embedded).")] = None,
    masks: Annotated[Path | None, typer.Option("--masks", help="Mask folder, with --data an image folder.")
                     ] = None,
    candidates: Annotated[list[str] | None, typer.Option(
        "--candidates", help=f"Artifacts to check ({MODEL_HELP}); repeatable.")] = None,
    backend: Annotated[str, typer.Option("--backend", help=f"For every candidate: {BACKEND_HELP}")] = "auto",
    subset: Annotated[str | None, typer.Option("--subset", help="Stem range, e.g. 0801-1000.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="First N pairs.")] = None,
    size: Annotated[str | None, typer.Option("--size", help="N or HxW (default: the weights').")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per call.")] = 8,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    max_delta_maxf: Annotated[float | None, typer.Option(
        "--max-delta-maxf", help="Override every candidate's ΔmaxFβ bound.")] = None,
    max_delta_mae: Annotated[float | None, typer.Option(
        "--max-delta-mae", help="Override every candidate's ΔMAE bound.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here (JSON).")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="PR curves per backend (PNG).")] = None,
) -> None:
    """PyTorch vs each artifact on real data: metrics, deltas and map agreement; exit 1 on a breach."""
    from ..bench.parity import format_parity, run_parity
    from ..bench.plots import check_plot_path, plot_pr_curves
    from ..data.datasets import open_dataset
    from ..engines import open_runner
    from ..files import check_destinations, write_json

    size_hw = parse_size(size)
    check_destinations(json_out)
    if plot is not None:
        check_plot_path(plot)
    dataset = (open_dataset(images=data, masks=masks, subset=subset, limit=limit) if masks is not None
               else open_dataset(data, subset=subset, limit=limit))
    with open_runner(f"torch:{variant}", weights=weights, device=device) as reference:
        report = run_parity(reference, candidates or [], dataset, size=size_hw, batch=batch, device=device,
                            backend=backend, max_delta_maxf=max_delta_maxf, max_delta_mae=max_delta_mae)
    typer.echo(format_parity(report))
    if json_out is not None:
        write_json(json_out, report.to_json())
        typer.echo(f"results: {json_out}")
    if plot is not None:
        curves = [r.evaluation.curve(f"{Path(r.evaluation.artifact).name} ({r.evaluation.backend} "
                                     f"{r.evaluation.precision})") for r in report.rows]
        typer.echo(f"curves: {plot_pr_curves(curves, plot, title=f'{report.dataset}, n={report.n}')}")
    if not report.passed:
        raise typer.Exit(1)


@app.command("benchmark")
def benchmark_command(
    data: Annotated[Path, typer.Option("--data", help="Dataset root (ECSSD, DUTS, …) the gate evaluates on.")],
    variant: Annotated[str, typer.Option("--variant", help="full or small: the PyTorch reference.")] = "small",
    weights: Annotated[Path | None, typer.Option("--weights", help="Checkpoint (default: embedded).")] = None,
    subset: Annotated[str | None, typer.Option("--subset", help="Stem range of --data, e.g. 0801-1000.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="First N pairs of --data.")] = None,
    calib: Annotated[Path | None, typer.Option(
        "--calib", help="INT8 calibration images (default: DUTS-TR/DUTS-TR-Image); never the --data images.")] = None,
    calib_subset: Annotated[str | None, typer.Option(
        "--calib-subset", help="Only this stem range of --calib (linked into --out), e.g. 0001-0800.")] = None,
    calib_num: Annotated[int, typer.Option("--calib-num", min=1, help="Calibration images drawn (seeded).")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Calibration sampling seed.")] = 0,
    size: Annotated[str | None, typer.Option("--size", help="N or HxW (default: the weights').")] = None,
    formats: Annotated[str | None, typer.Option(
        "--formats", help="FORMAT:PRECISION names, comma-separated (default: torch:fp32, onnx:fp32,fp16,int8, "
                          "then OpenVINO and TensorRT, skipped with a reason where they cannot run).")] = None,
    device: Annotated[str, typer.Option(
        "--device", help="cpu, or cuda (PyTorch and ONNX Runtime on the GPU); engines always run on cuda.")] = "cpu",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for timing (all).")] = None,
    min_time_s: Annotated[float, typer.Option(
        "--min-time-s", min=0, help="Timed seconds of each paired run (model only; end to end).")] = 20.0,
    warmup_s: Annotated[float, typer.Option("--warmup-s", min=0, help="Untimed seconds per artifact.")] = 1.0,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per call in the parity gate.")] = 8,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Artifacts and caches (default: benchmark-artifacts/ beside --json or --report).")] = None,
    max_delta_maxf: Annotated[float | None, typer.Option(
        "--max-delta-maxf", help="Override every artifact's ΔmaxFβ bound.")] = None,
    max_delta_mae: Annotated[float | None, typer.Option(
        "--max-delta-mae", help="Override every artifact's ΔMAE bound.")] = None,
    end_to_end: Annotated[bool, typer.Option(
        "--end-to-end/--no-end-to-end", help="Also time decode + preprocess + infer + postprocess (paired).")] = True,
    rss: Annotated[bool, typer.Option(
        "--rss/--no-rss", help="Peak RSS of each artifact, each in a fresh process.")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the rows here (JSON).")] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Write a Markdown report here (PNG plots beside it).")] = None,
) -> None:
    """Build every artifact this machine runs, gate each on parity with PyTorch, time all in one paired run,
    and name the fastest one that passes."""
    from ..bench.benchmark import BenchmarkOptions, check_report, render_text, run_benchmark, write_report
    from ..files import check_destinations, write_json

    check_destinations(json_out)
    if report is not None:
        check_report(report)
    opts = BenchmarkOptions(
        data=data, variant=variant, weights=weights, subset=subset, limit=limit, calib=calib,
        calib_subset=calib_subset, calib_num=calib_num, seed=seed, size=parse_size(size), formats=formats,
        device=device, threads=threads, min_time_s=min_time_s, warmup_s=warmup_s, batch=batch, out=out,
        max_delta_maxf=max_delta_maxf, max_delta_mae=max_delta_mae, end_to_end=end_to_end, rss=rss)
    result = run_benchmark(opts, json_out=json_out, report=report)
    typer.echo(render_text(result))
    if json_out is not None:
        typer.echo(f"results: {write_json(json_out, result.to_json())}")
    if report is not None:
        typer.echo(f"report: {write_report(result, report)}")
    if result.recommended is None:
        raise typer.Exit(1)


main = run(app, "u2bench")


if __name__ == "__main__":
    main()
