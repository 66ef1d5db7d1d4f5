"""Fuzzing the loaders with damaged real files: every failure is one U2Error line, never a traceback or a crash.

Real files (the embedded demo checkpoint, a U²-Net† ONNX export, JPEG and PNG images) are mutated
by truncation, bit flips (biased towards the headers, graph and zip directory at both ends) and
splices of two files, all from a seeded ``numpy`` generator. In process, each mutant goes through
its library loader; a few go through the CLIs as subprocesses, which must exit 0 or 1 (never on
a signal), print no traceback and leave no temporary or partial file behind.

``U2DEPLOY_FUZZ_N`` sets the number of in-process mutants (default 40, a few seconds);
``nox -s fuzz`` runs 2000; ``U2DEPLOY_FUZZ_SEED`` draws other mutants. A failure names the seed
and mutant, and keeps the file under pytest's tmp_path to reproduce it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from u2deploy.data.images import read_image
from u2deploy.engines import open_runner
from u2deploy.engines.contract import check_contract
from u2deploy.errors import U2Error
from u2deploy.model import load_model, load_state_dict
from u2deploy.model.registry import default_weights
from u2deploy.onnx_file import load_onnx

N = int(os.environ.get("U2DEPLOY_FUZZ_N", "40"))
N_CLI = max(6, N // 40)
SEED = int(os.environ.get("U2DEPLOY_FUZZ_SEED", "20240601"))
BIN = Path(sys.executable).parent
CLI_TIMEOUT_S = 180


# --- mutations -----------------------------------------------------------------------------------------------


def mutate(data: bytes, other: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """A truncation, 1-8 bit flips, or ``data``'s head spliced onto ``other``'s tail."""
    kind = str(rng.choice(["truncate", "flip", "flip", "splice"]))
    n = len(data)
    if kind == "truncate":
        return kind, data[:int(rng.integers(0, n))]
    if kind == "flip":
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            region = int(rng.integers(0, 3))  # head (magic, pickle, graph), tail (zip directory, graph io), anywhere
            pos = (int(rng.integers(0, min(n, 32768))) if region == 0 else
                   int(rng.integers(max(0, n - 4096), n)) if region == 1 else int(rng.integers(0, n)))
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        return kind, bytes(buf)
    return kind, data[:int(rng.integers(0, n))] + other[int(rng.integers(0, len(other))):]


def _clean_refusal(exc: U2Error) -> str | None:
    """None if the message is one clean line; else what is wrong with it."""
    msg = str(exc)
    if not msg.strip():
        return "empty U2Error message"
    if "\n" in msg or "Traceback" in msg:
        return f"multi-line U2Error: {msg!r}"
    if "weights_only" in msg:
        return f"torch's weights_only advice leaked: {msg!r}"
    return None


# --- the real files ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory, random_small_onnx: Path) -> dict[str, Path]:
    from PIL import Image

    from u2deploy.data.samples import generated_images

    demo = default_weights("small")
    if demo is None or demo.path is None:
        pytest.skip("no embedded demo weights")
    folder = tmp_path_factory.mktemp("real")
    rgb, other = generated_images(2, seed=3, size=(72, 96))
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=90)
    Image.fromarray(other).save(folder / "photo.png")
    Image.fromarray(other[:, :, 0]).save(folder / "gray.png")
    files = {"pth": demo.path, "onnx": random_small_onnx, "jpg": folder / "photo.jpg",
             "png": folder / "photo.png", "gray.png": folder / "gray.png"}
    for path in files.values():  # the originals load: every refusal below is the mutation's doing
        _load(path)
    return files


def _load(path: Path) -> None:
    """What the pipeline does with a file of this kind when a user passes it."""
    if path.suffix == ".pth":
        load_state_dict(path)
        load_model(None, path)
    elif path.suffix == ".onnx":
        model = load_onnx(path)
        check_contract(model, str(path))
        with open_runner(str(path)) as runner:
            shape = runner.info.input_size or (64, 64)
            runner.infer(np.zeros((1, 3, *shape), np.float32))
    else:
        read_image(path)


def _load_raw_onnx(path: Path) -> None:
    """The runner on bytes nobody validated, as ``u2bench --model x.onnx`` opens them."""
    with open_runner(str(path)) as runner:
        runner.infer(np.zeros((1, 3, *(runner.info.input_size or (64, 64))), np.float32))


# --- in process ----------------------------------------------------------------------------------------------


def test_mutants_in_process_fail_as_one_line_u2errors(real_files: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(SEED)
    kinds = list(real_files)
    problems: list[str] = []
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(N):
        kind = kinds[i % len(kinds)]
        source = real_files[kind]
        partner = real_files[str(rng.choice([k for k in kinds if k != kind]))]
        how, data = mutate(source.read_bytes(), partner.read_bytes(), rng)
        path = tmp_path / f"m{i:05d}_{how}{''.join(source.suffixes[-1:])}"
        path.write_bytes(data)
        loaders = [_load] + ([_load_raw_onnx] if path.suffix == ".onnx" else [])
        for loader in loaders:
            try:
                loader(path)
                outcomes["loaded"] += 1
            except U2Error as exc:
                outcomes["refused"] += 1
                if (why := _clean_refusal(exc)) is not None:
                    problems.append(f"{path.name} ({loader.__name__}): {why}")
            except Exception as exc:  # noqa: BLE001 - exactly what this test hunts
                problems.append(f"{path.name} ({loader.__name__}): {type(exc).__name__}: {str(exc)[:200]!r}")
        if not problems:
            path.unlink()  # keep only the mutants that break something
    assert not problems, f"seed {SEED}, {len(problems)} bad outcomes (mutants kept in {tmp_path}):\n" + "\n".join(
        problems[:20])
    assert outcomes["refused"] > 0


# --- the CLIs, as subprocesses -------------------------------------------------------------------------------


def _cli_cases(real: dict[str, Path], work: Path, rng: np.random.Generator) -> list[tuple[list[str], Path]]:
    """(argv, output folder) pairs: each case gets its own folder, checked for leftovers afterwards."""
    images = work / "images"
    images.mkdir()
    for name in ("jpg", "png", "gray.png"):
        (images / real[name].name).write_bytes(real[name].read_bytes())

    def mutant(kind: str, index: int, how: str | None = None) -> Path:
        partner = real["onnx" if kind != "onnx" else "pth"].read_bytes()
        while True:
            got, data = mutate(real[kind].read_bytes(), partner, rng)
            if how is None or got == how:
                break
        path = work / f"cli{index:04d}_{got}{real[kind].suffix}"
        path.write_bytes(data)
        return path

    def out(index: int) -> Path:
        folder = work / f"out{index:04d}"
        folder.mkdir()
        return folder

    u2bench, u2export = str(BIN / "u2bench"), str(BIN / "u2export")
    text = work / "notes.pth"
    text.write_text("hello world this is text\n")  # the file that made torch.load raise KeyError: 101
    bad_images = work / "bad_images"
    bad_images.mkdir()
    for j, name in enumerate(("jpg", "png", "gray.png")):
        m = mutant(name, 900 + j)
        m.rename(bad_images / m.name)
    (bad_images / "ok.png").write_bytes(real["png"].read_bytes())
    cases: list[tuple[list[str], Path]] = []

    def add(argv_for, index: int) -> None:
        folder = out(index)
        cases.append((argv_for(folder), folder))

    fixed = [
        lambda i: add(lambda o: [u2bench, "predict", "--model", str(mutant("onnx", i, "flip")),
                                 "--images", str(images), "-o", str(o / "masks")], i),
        lambda i: add(lambda o: [u2bench, "predict", "--model", str(mutant("onnx", i, "truncate")),
                                 "--images", str(images), "-o", str(o / "masks")], i),
        lambda i: add(lambda o: [u2export, "check-qdq", str(mutant("onnx", i, "splice"))], i),
        lambda i: add(lambda o: [u2export, "onnx", "--weights", str(mutant("pth", i)), "--size", "64",
                                 "--no-simplify", "--verify-images", str(images), "-o", str(o / "out.onnx")], i),
        lambda i: add(lambda o: [u2export, "onnx", "--weights", str(text), "-o", str(o / "out.onnx")], i),
        lambda i: add(lambda o: [u2bench, "predict", "--model", str(real["onnx"]), "--images", str(bad_images),
                                 "-o", str(o / "masks")], i),
    ]
    for i in range(N_CLI):
        fixed[i % len(fixed)](i)
    return cases


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=env)


def _leftovers(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.name.startswith(".") or p.suffix in (".tmp", ".probe", ".part")]


def test_mutants_through_the_clis_exit_cleanly(real_files: dict[str, Path], tmp_path: Path) -> None:
    if not (BIN / "u2bench").is_file() or not (BIN / "u2export").is_file():
        pytest.skip(f"u2bench / u2export are not installed next to {sys.executable}")
    cases = _cli_cases(real_files, tmp_path, np.random.default_rng(SEED + 1))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda case: _run(case[0], tmp_path), cases))
    problems = []
    for (argv, folder), r in zip(cases, results, strict=True):
        what = " ".join(Path(a).name if os.sep in a else a for a in argv)
        errors = [ln for ln in r.stderr.splitlines() if ": error: " in ln]
        if r.returncode not in (0, 1):
            problems.append(f"{what}: exit {r.returncode} (negative: killed by a signal)\n{r.stderr[-800:]}")
        elif "Traceback" in r.stderr or "Traceback" in r.stdout:
            problems.append(f"{what}: a traceback\n{r.stderr[-1500:]}")
        elif len(errors) > 1:
            problems.append(f"{what}: {len(errors)} error lines: {errors}")
        elif r.returncode == 1 and argv[1] != "check-qdq" and not any(
                ln.startswith(f"{Path(argv[0]).name}: ") for ln in r.stderr.splitlines()):
            problems.append(f"{what}: exit 1 without a line saying why\n{r.stderr[-800:]}")
        if leftovers := _leftovers(folder):
            problems.append(f"{what}: left {leftovers} in {folder}")
        if r.returncode == 1 and (folder / "out.onnx").exists():
            problems.append(f"{what}: failed but wrote {folder / 'out.onnx'}")
    assert not problems, "\n".join(problems)
    # the text checkpoint is the case the loader was fixed for: a line that says what the file is
    text_case = next(r for (argv, _), r in zip(cases, results, strict=True) if any("notes.pth" in a for a in argv))
    assert text_case.returncode == 1
    assert "notes.pth: not a PyTorch checkpoint (a text file starting 'hello world" in text_case.stderr
