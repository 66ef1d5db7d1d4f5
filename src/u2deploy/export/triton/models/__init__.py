"""Triton python-backend models, copied by ``u2export triton`` into ``REPO/<model>/1/model.py``.

They run inside Triton's python backend (they import ``triton_python_backend_utils``, which only the
server provides) and call this project's own code, so ``u2deploy`` must be installed in the
server's Python environment: ``preprocess`` (image bytes → network input, by
:mod:`u2deploy.data.images` and :mod:`u2deploy.data.preprocess`), ``runner`` (the network through
:func:`u2deploy.engines.open_runner`) and ``postprocess`` (map → mask at the image's size, by
:mod:`u2deploy.data.postprocess`). Nothing in the package imports them; :func:`source` reads their text.
"""

from __future__ import annotations

from importlib import resources

NAMES = ("preprocess", "runner", "postprocess")


def source(name: str) -> str:
    """The text of one model (``preprocess``, ``runner`` or ``postprocess``), as installed with the package."""
    if name not in NAMES:
        raise ValueError(f"no python-backend model {name!r}; expected one of {', '.join(NAMES)}")
    return (resources.files(__name__) / f"{name}.py").read_text()
