"""Sessions: `nox -s tests` (the suite CI runs) and `nox -s lint`.

torch is pinned to the 2.13.0 CPU build: an unpinned torch pulls a multi-GB CUDA build.
"""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
TORCH = "torch==2.13.0"


@nox.session
def tests(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[test,openvino,triton]")  # the OpenVINO and Triton tests run in CI, and skip where absent
    # The live Triton test's server: the tritonserver 2.51 binary this wheel bundles (python backend only). Without
    # its dependencies, whose numpy<2 pin would downgrade the suite's numpy; the server's python backend gets
    # numpy<2 in an environment of its own (u2deploy.export.triton.python_backend_env).
    session.install("--no-deps", "nvidia-pytriton==0.7.0")
    # pysodmetrics caps numpy and scikit-image below what the package uses; its metrics only need
    # these two imports beside them, so it goes in without its pins, for the cross-check tests.
    session.install("opencv-python-headless", "scikit-learn")
    session.install("--no-deps", "pysodmetrics")
    session.run("pytest", *(session.posargs or ["-q"]))


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
