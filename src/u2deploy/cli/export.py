"""`u2export`: turn the PyTorch network into deployable artifacts (ONNX FP32/FP16/INT8, OpenVINO, TensorRT,
a Triton model repository, a browser site). Each command is one stage's library call; the default output
names are the format table's (:mod:`u2deploy.formats`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import new_app, run

app = new_app("u2export", "Export U²-Net to ONNX (FP32, FP16, INT8), OpenVINO, TensorRT, a Triton model "
                          "repository or a browser site, each verified.")


@app.command("trt")
def trt_command(
    onnx: Annotated[Path | None, typer.Option("--onnx", help="Build from this ONNX file.")] = None,
    variant: Annotated[str | None, typer.Option(
        "--variant", help="full or small: export the ONNX first (and the FP16 / Q/DQ one).")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Checkpoint for --variant.")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="FP16 engine.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="INT8 engine (needs --calib unless the ONNX is Q/DQ).")
                    ] = False,
    fp32: Annotated[bool, typer.Option("--fp32", help="FP32 engine.")] = False,
    calib: Annotated[Path | None, typer.Option("--calib", help="Folder of calibration images.")] = None,
    int8_mode: Annotated[str, typer.Option(
        "--int8-mode", help="auto (8.6: calibrator, else qdq), qdq (Q/DQ ONNX) or calibrator (8.6/10.x).")
    ] = "auto",
    calib_images: Annotated[int | None, typer.Option(
        "--calib-images", min=1, help="INT8: images drawn from --calib, seeded (default: all for the calibrator, "
                                      "300 for the Q/DQ ONNX).")] = None,
    calib_batch: Annotated[int, typer.Option("--calib-batch", min=1, help="Calibrator: batch size.")] = 8,
    calib_seed: Annotated[int, typer.Option("--calib-seed", help="INT8: sampling seed.")] = 0,
    calib_cache: Annotated[Path | None, typer.Option(
        "--calib-cache", help="Calibrator: scales cache (default OUT.calib.cache; reused if present).")
    ] = None,
    batch: Annotated[int | None, typer.Option("--batch", min=1, help="Fixed batch size.")] = None,
    min_batch: Annotated[int | None, typer.Option("--min-batch", min=1, help="Profile: smallest.")] = None,
    opt_batch: Annotated[int | None, typer.Option("--opt-batch", min=1, help="Profile: tuned for.")] = None,
    max_batch: Annotated[int | None, typer.Option("--max-batch", min=1, help="Profile: largest.")] = None,
    size: Annotated[str | None, typer.Option("--size", help="HxW, for ONNX files with dynamic H, W.")] = None,
    workspace: Annotated[float | None, typer.Option("--workspace", help="Builder workspace, GiB.")] = None,
    timing_cache: Annotated[Path | None, typer.Option(
        "--timing-cache", help="Timing cache file, read and updated (speeds up rebuilds).")] = None,
    version_compatible: Annotated[bool, typer.Option(
        "--version-compatible", help="Engine loads in later TensorRT releases of the same major.")] = False,
    hardware_compatible: Annotated[bool, typer.Option(
        "--hardware-compatible", help="Engine loads on any Ampere or newer GPU (AMPERE_PLUS).")] = False,
    device: Annotated[int, typer.Option("--device", min=0, help="CUDA device index.")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", help="TensorRT's INFO messages too.")] = False,
    verify_images: Annotated[Path | None, typer.Option(
        "--verify-images", help="Images to verify the engine on (default: held-out ECSSD if present, else "
                                "--calib images calibration did not draw, else generated).")] = None,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Write the engine without running it against its ONNX (the manifest says so).")
    ] = False,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Engine file (default <u2netp|u2net|onnx stem>_<precision>.engine; intermediate "
                               "ONNX files go to <engine stem>.build/ beside it).")] = None,
) -> None:
    """Build a TensorRT engine (8.6, 10.x or 11.x), verified against its ONNX, with a JSON manifest beside it."""
    from ..export.trt import build_trt_engine, precision_from_flags
    from ..export.trt_plan import BatchRange
    from ..sizes import parse_size

    result = build_trt_engine(
        onnx=onnx, variant=variant, weights=weights, precision=precision_from_flags(fp16, int8, fp32),
        batch=BatchRange.from_flags(batch, min_batch, opt_batch, max_batch), size=parse_size(size),
        workspace_gib=workspace, timing_cache=timing_cache, output=output, calib_dir=calib,
        calib_images=calib_images, calib_batch=calib_batch, calib_seed=calib_seed, calib_cache=calib_cache,
        int8_mode=int8_mode, version_compatible=version_compatible, hardware_compatible=hardware_compatible,
        device=device, verbose=verbose, verify_images=verify_images, no_verify=no_verify)
    typer.echo(result.status_line())


def _size_option(size: str | None, height: int | None, width: int | None) -> tuple[int, int] | None:
    from ..sizes import parse_size

    if height is not None or width is not None:
        if height is None or width is None or size is not None:
            raise typer.BadParameter("give --size, or --height and --width together")
        return parse_size(f"{height}x{width}", "--height/--width")
    return parse_size(size)


_VERIFY_IMAGES_HELP = ("Verify on these images (default: held-out ECSSD if present, else --calib images "
                      "calibration did not draw, else generated ones).")
_NO_VERIFY_HELP = "Write without verifying against the source ONNX (the manifest says so)."


@app.command("onnx")
def onnx_command(
    variant: Annotated[str, typer.Option("--variant", help="full (U²-Net) or small (U²-Net†).")] = "small",
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Checkpoint (u2net.pth, u2netp.pth, …); default: the embedded demo weights.")] = None,
    size: Annotated[str | None, typer.Option(
        "--size", help="N or HxW, each side 32-4096 (default: the weights').")] = None,
    height: Annotated[int | None, typer.Option("--height", help="Input height (with --width).")] = None,
    width: Annotated[int | None, typer.Option("--width", help="Input width (with --height).")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Static batch size.")] = 1,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Batch axis left dynamic.")] = False,
    dynamic_hw: Annotated[bool, typer.Option("--dynamic-hw", help="Height and width left dynamic.")] = False,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (11-20).")] = 17,
    outputs: Annotated[str, typer.Option("--outputs", help="fused (d0 only) or all (d0 … d6).")] = "fused",
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxsim.")] = False,
    verify_images: Annotated[Path | None, typer.Option(
        "--verify-images", help="Images to verify on (default: held-out ECSSD if present, else generated).")
    ] = None,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Default: u2netp.onnx / u2net.onnx. An existing file there is replaced: it is the "
                               "output you named (u2bench predict and u2export triton refuse without --overwrite).")
    ] = None,
) -> None:
    """Export to ONNX, check, simplify, verify against PyTorch (nothing written if max|Δ| > 1e-4, mean|Δ| > 0.001)."""
    from ..export.onnx import export_onnx

    r = export_onnx(variant, weights, output, size=_size_option(size, height, width), batch=batch,
                    dynamic_batch=dynamic_batch, dynamic_hw=dynamic_hw, opset=opset, outputs=outputs,
                    simplify=not no_simplify, verify_images_dir=verify_images)
    typer.echo(r.status_line())


@app.command("quantize")
def quantize_command(
    model: Annotated[Path, typer.Argument(help="FP32 ONNX model (from u2export onnx).")],
    calib: Annotated[Path | None, typer.Option(
        "--calib", help="Calibration images (default: DUTS-TR/DUTS-TR-Image).")] = None,
    num: Annotated[int, typer.Option("--num", min=1, help="Images drawn from --calib (all if fewer).")] = 300,
    method: Annotated[str, typer.Option("--method", help="minmax, entropy or percentile.")] = "minmax",
    target: Annotated[str | None, typer.Option(
        "--target", help="cpu (ONNX Runtime) or tensorrt (default: tensorrt where TensorRT and a GPU are, else cpu)."
    )] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Keep this node in float (repeat).")
                       ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    cache: Annotated[Path | None, typer.Option("--cache", help="Ranges cache (default MODEL.calib.json).")
                     ] = None,
    recalibrate: Annotated[bool, typer.Option("--recalibrate", help="Overwrite the cache.")] = False,
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Print per-layer errors.")] = False,
    vnni_only: Annotated[bool, typer.Option(
        "--vnni-only", help="cpu: full 8-bit weights, exact only on CPUs with VNNI, AMX or ARM dot product "
                            "(the default 7-bit weights cannot saturate on any x86 CPU).")] = False,
    verify_images: Annotated[Path | None, typer.Option("--verify-images", help=_VERIFY_IMAGES_HELP)] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help=_NO_VERIFY_HELP)] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Default MODEL_int8[_trt].onnx.")
                      ] = None,
) -> None:
    """INT8 Q/DQ ONNX, calibrated; checked against TensorRT's Q/DQ rules or x86 saturation (cpu), and
    verified against the FP32 ONNX (writes nothing if map mean|Δ| > 0.01)."""
    from ..calibration.quantize import quantize_model

    r = quantize_model(model, calib, output, target=target, num=num, method=method, seed=seed,
                       exclude=exclude or [], cache=cache, recalibrate=recalibrate, vnni_only=vnni_only,
                       verify_images=verify_images, no_verify=no_verify)
    if sensitivity:
        from ..calibration import DEFAULT_CALIB_DIR
        from ..calibration.sensitivity import report, sensitivity

        typer.echo(report(sensitivity(model, r.path, calib or DEFAULT_CALIB_DIR)))
    typer.echo(r.status_line())


@app.command("check-qdq")
def check_qdq_command(
    model: Annotated[Path, typer.Argument(help="Any ONNX model.")],
    rules: Annotated[str, typer.Option(
        "--rules", help="tensorrt (explicit-quantization rules), cpu (no u8×s8 saturation on any x86 CPU), "
                        "or auto: the model's quant_target, else tensorrt.")] = "auto",
) -> None:
    """Check a Q/DQ ONNX against TensorRT's rules or prove it saturation-free on x86 (exit 1 on a failure)."""
    from ..calibration.qdq_rules import check_rules

    text, ok = check_rules(model, rules)
    typer.echo(text)
    if not ok:
        raise typer.Exit(1)


@app.command("openvino")
def openvino_command(
    model: Annotated[Path, typer.Argument(help="FP32 ONNX model (from u2export onnx).")],
    int8: Annotated[bool, typer.Option("--int8", help="INT8 through NNCF, calibrated on --calib.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="FP16-compressed weights (default: FP32 weights).")] = False,
    calib: Annotated[Path | None, typer.Option(
        "--calib", help="Calibration images for --int8 (default: DUTS-TR/DUTS-TR-Image).")] = None,
    num: Annotated[int, typer.Option("--num", min=1, help="Images drawn from --calib (all if fewer).")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    verify_images: Annotated[Path | None, typer.Option("--verify-images", help=_VERIFY_IMAGES_HELP)] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help=_NO_VERIFY_HELP)] = False,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="IR file NAME.xml (weights in NAME.bin; default MODEL[_int8|_fp16]_openvino.xml).")
    ] = None,
) -> None:
    """OpenVINO IR (xml + bin), FP32, FP16 or INT8 (NNCF), verified against its source ONNX at its precision's bound."""
    from ..export.openvino import export_openvino

    typer.echo(export_openvino(model, output, int8=int8, fp16=fp16, calib_dir=calib, num=num, seed=seed,
                               verify_images=verify_images, no_verify=no_verify).status_line())


@app.command("formats")
def formats_command() -> None:
    """The formats u2export builds and u2bench runs: backends (installed or not), devices, build commands."""
    import typer.main

    from ..formats import FORMATS, describe

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    names = dict.fromkeys(name for f in FORMATS for name in f.commands)
    typer.echo(describe({name: command_options(commands[name]) for name in names}))


def command_options(command: typer.core.TyperCommand) -> list[str]:  # type: ignore[name-defined]
    """A command's options as it declares them (its long names), which ``u2export formats`` lists."""
    return [next((o for o in p.opts if o.startswith("--")), p.opts[0]) for p in command.params
            if p.param_type_name == "option" and p.name != "help"]


@app.command("fp16")
def fp16_command(
    model: Annotated[Path, typer.Argument(help="FP32 ONNX model (from u2export onnx).")],
    calib: Annotated[Path | None, typer.Option(
        "--calib", help="Images to measure activation ranges on (default: 8 held-out ECSSD or generated ones; "
                        "verification uses others).")] = None,
    keep: Annotated[list[str] | None, typer.Option("--keep", help="Keep this node in FP32 (repeat).")] = None,
    verify_images: Annotated[Path | None, typer.Option("--verify-images", help=_VERIFY_IMAGES_HELP)] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help=_NO_VERIFY_HELP)] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Default MODEL_fp16.onnx.")] = None,
) -> None:
    """FP16 ONNX (FP32 inputs and outputs), verified against FP32 by FP16 emulation and ONNX Runtime
    (writes nothing if map mean|Δ| > 0.002)."""
    from ..export.fp16 import convert_fp16_model

    typer.echo(convert_fp16_model(model, output, calib_dir=calib, keep=keep or [], verify_images=verify_images,
                                  no_verify=no_verify).status_line())


@app.command("triton")
def triton_command(
    artifacts: Annotated[list[Path], typer.Argument(
        help="Artifacts: .onnx, .engine (TensorRT, with its manifest) or OpenVINO .xml (+ .bin).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model repository folder (created if absent).")],
    name: Annotated[str | None, typer.Option(
        "--name", help="Model name (one artifact; default u2netp / u2net, or each artifact's stem).")] = None,
    max_batch: Annotated[int | None, typer.Option(
        "--max-batch", min=1, help="max_batch_size of a dynamic-batch artifact (default 8, or its profile's max).")
    ] = None,
    instances: Annotated[int, typer.Option("--instances", min=1, help="Model instances (instance_group count).")
                         ] = 1,
    kind: Annotated[str | None, typer.Option(
        "--kind", help="cpu or gpu instances (default: gpu for TensorRT engines, else cpu).")] = None,
    preprocess_in_server: Annotated[bool, typer.Option(
        "--preprocess-in-server", help="Add an ensemble: clients send image bytes, get a mask at the image's size.")
    ] = False,
    model_backend: Annotated[str, typer.Option(
        "--model-backend", help="native (Triton's backend for the format) or python (u2deploy's runner).")
    ] = "native",
    no_dynamic_batching: Annotated[bool, typer.Option(
        "--no-dynamic-batching", help="Leave out dynamic_batching (batches only as clients send them).")] = False,
    queue_delay_us: Annotated[int, typer.Option(
        "--queue-delay-us", min=1, help="dynamic_batching max_queue_delay_microseconds.")] = 2000,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="Intra-op threads per instance (ONNX Runtime, OpenVINO, python runner).")] = None,
    accelerator: Annotated[str, typer.Option(
        "--accelerator", help="ONNX Runtime execution accelerator: none, openvino (cpu) or tensorrt (gpu).")
    ] = "none",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace model directories already there.")
                         ] = False,
) -> None:
    """Write a Triton Inference Server model repository (config.pbtxt + version 1) from artifacts."""
    from ..export.triton import export_triton

    repo = export_triton(artifacts, output, name=name, overwrite=overwrite, max_batch=max_batch,
                         instances=instances, kind=kind, preprocess_in_server=preprocess_in_server,
                         model_backend=model_backend, dynamic_batching=not no_dynamic_batching,
                         queue_delay_us=queue_delay_us, threads=threads, accelerator=accelerator)
    typer.echo(repo.status_line())


@app.command("web")
def web_command(
    model: Annotated[Path, typer.Argument(
        help="ONNX artifact (from u2export onnx, fp16, or quantize --target cpu).")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Site folder to write (default MODEL_web/ beside MODEL; an existing site is replaced "
                               "only with --overwrite).")] = None,
    ort_web: Annotated[Path | None, typer.Option(
        "--ort-web", help="onnxruntime-web's dist folder, npm-installed at the release pinned in "
                          "u2deploy/export/web/package.json (default: ./node_modules/onnxruntime-web/dist, "
                          "then ./.web/node_modules/onnxruntime-web/dist). The site ships this copy.")] = None,
    webgpu: Annotated[bool, typer.Option(
        "--webgpu", help="Also the WebGPU backend: its runtime, and the model with floor max-pools where "
                         "that is exact (refused where it is not).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a site already at -o.")] = False,
    serve: Annotated[bool, typer.Option(
        "--serve", help="Then serve it on 127.0.0.1 with the COOP/COEP headers, until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port for --serve.")] = 8000,
) -> None:
    """A static site that removes backgrounds in the browser (onnxruntime-web), the masks equal u2bench predict's."""
    from ..export.web import export_web

    site = export_web(model, output, ort_web=ort_web, overwrite=overwrite, webgpu=webgpu)  # output None: the table's
    typer.echo(site.status_line())
    if serve:
        from ..export.web.serve import serve_forever

        serve_forever(site.path, port=port)


@app.command("triton-env")
def triton_env_command(
    folder: Annotated[Path, typer.Argument(help="A new or empty folder (or one this command made before).")],
) -> None:
    """Make the Python environment Triton 2.51's python backend needs (numpy<2; pip downloads it, the one
    download of this package): the folder's bin/python3, for the server's PATH."""
    from ..export.triton.server import make_python_backend_env

    python = make_python_backend_env(folder)
    typer.echo(f"the server's python: {python}")


main = run(app, "u2export")


if __name__ == "__main__":
    main()
