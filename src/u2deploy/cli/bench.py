"""`u2bench`: predict, evaluate, compare with PyTorch, and time artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..sizes import parse_size
from ._common import new_app, run

app = new_app("u2bench", "Run, evaluate and time U²-Net artifacts (PyTorch, ONNX, TensorRT).")


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
    models: Annotated[list[str], typer.Option("--model", help="torch:full, torch:small, x.onnx or x.engine; "
                                                              "repeat to compare.")],
    weights: Annotated[str | None, typer.Option("--weights", help="Checkpoint for torch:*.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="auto, torch, onnxruntime, tensorrt or openvino.")] = "auto",
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: cpu; engines: cuda).")
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
        cuda_graphs=cuda_graphs, compile=compile_, tf32=tf32)
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
    model: Annotated[str, typer.Option("--model", help="torch:small, torch:full, x.onnx or x.engine.")],
    images: Annotated[list[Path], typer.Option("--images", help="Image folder or files (repeatable).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for <stem>.png masks.")],
    weights: Annotated[str | None, typer.Option("--weights", help="Checkpoint for torch:*.")] = None,
    preprocess_mode: Annotated[str, typer.Option(
        "--preprocess", help="fast (deployment) or reference (the authors' script, exactly).")] = "fast",
    cutout: Annotated[bool, typer.Option("--cutout", help="Also write RGBA cut-outs to OUT/cutouts/.")] = False,
    size: Annotated[str | None, typer.Option("--size", help="N or HxW (default: the artifact's).")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per call (dynamic-batch artifacts).")] = 8,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace masks/cut-outs already in OUT (input images are never replaced).")] = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Keep outputs already in OUT and skip their images (resume a run).")] = False,
) -> None:
    """Saliency masks (8-bit PNG, original size) for images, from any artifact."""
    import sys

    from tqdm import tqdm

    from ..bench.predict import PredictInterrupted, plan_outputs, predict
    from ..data.images import list_images
    from ..engines import open_runner

    def say(msg: str) -> None:  # through tqdm, so that a line never garbles the progress bar
        tqdm.write(f"u2bench: {msg}", file=sys.stderr)

    scan_skipped: list[tuple[Path, str]] = []
    try:
        paths = list_images([str(p) for p in images], skipped=scan_skipped)
    finally:
        for entry, why in scan_skipped:
            say(f"{entry}: {why}; skipped")
    hw = parse_size(size)
    plan = plan_outputs(paths, output, cutout=cutout, overwrite=overwrite, skip_existing=skip_existing)
    try:
        with open_runner(model, weights=weights, device=device) as runner:
            report = predict(runner, paths, output, mode=preprocess_mode, size=hw, batch=batch,
                             cutout=cutout, plan=plan, on_error=say)
    except KeyboardInterrupt as exc:
        written = len(exc.report.written) if isinstance(exc, PredictInterrupted) else 0
        say(f"interrupted: {written} masks written to {output} and kept"
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
        "--candidates", help="Artifacts to check (.onnx, .engine); repeatable.")] = None,
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
        report = run_parity(reference, candidates or [], dataset, size=size_hw, batch=batch,
                            device=device, max_delta_maxf=max_delta_maxf, max_delta_mae=max_delta_mae)
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


main = run(app, "u2bench")


if __name__ == "__main__":
    main()
