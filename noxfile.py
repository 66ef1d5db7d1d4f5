"""Sessions: `nox -s tests` (the suite CI runs), `nox -s lint`, and `nox -s avx2` (the ISA-sensitive tests on an
emulated AVX2-only CPU, which CI adds on CPUs with an int8 dot product).

torch is pinned to the 2.13.0 CPU build: an unpinned torch pulls a multi-GB CUDA build.
"""

import shutil

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
TORCH = "torch==2.13.0"


@nox.session
def tests(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[test,openvino,triton,ray,web]")  # these extras' tests run in CI, and skip where absent
    # The live Triton test's server: the tritonserver 2.51 binary this wheel bundles (python backend only). Without
    # its dependencies, whose numpy<2 pin would downgrade the suite's numpy; the server's python backend gets
    # numpy<2 in an environment of its own, made by `u2export triton-env DIR` (the live test runs it).
    session.install("--no-deps", "nvidia-pytriton==0.7.0")
    # pysodmetrics caps numpy and scikit-image below what the package uses; its metrics only need
    # these two imports beside them, so it goes in without its pins, for the cross-check tests.
    session.install("opencv-python-headless", "scikit-learn")
    session.install("--no-deps", "pysodmetrics")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def avx2(session: nox.Session) -> None:
    """The tests marked `isa` again, every ONNX Runtime and OpenVINO inference on an emulated AVX2-only CPU.

    INT8 and FP16 kernels differ between CPUs with an int8 dot product (VNNI, AMX) and AVX2-only ones, and a
    machine with VNNI never runs the AVX2 kernels. The tests run natively (PyTorch references, files, data);
    their runners' inference goes to one process under `qemu-x86_64 -cpu Haswell` (tests/emulated_cpu.py),
    on fewer held-out images (conftest.held_out). 13.5 minutes on a quiet 2-core Zen 3.
    """
    if shutil.which("qemu-x86_64") is None:
        session.error("needs qemu-x86_64 7.2 or newer to emulate an AVX2-only CPU: apt-get install -y qemu-user")
    session.install(TORCH)
    session.install("-e", ".[test,openvino]")
    session.run("pytest", "-m", "isa", "-q", "-p", "no:cacheprovider", *session.posargs,
                env={"U2DEPLOY_EMULATE_CPU": "Haswell"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")  # pinned: a new release's rules must not turn CI red on their own
    session.run("ruff", "check", "src", "tests", "tools", "noxfile.py")


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Regenerate docs/benchmarks.md on this machine."""
    session.install(TORCH)
    session.install("-e", ".[plot]")
    session.run("python", "tools/make_benchmarks.py", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """The fuzz tests at 2000 mutants (a few minutes): damaged checkpoints, ONNX files and images."""
    session.install(TORCH)  # the same environment as `tests`
    session.install("-e", ".[test]")
    session.install("opencv-python-headless", "scikit-learn")
    session.install("--no-deps", "pysodmetrics")
    session.run("pytest", "tests/test_fuzz.py", "-q", *session.posargs, env={"U2DEPLOY_FUZZ_N": "2000"})
