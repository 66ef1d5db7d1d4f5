"""The browser as a format: ``u2export web`` writes a static site that removes backgrounds on the
visitor's own device with onnxruntime-web, and the tests prove its masks equal ``u2bench predict``'s.

Read in this order: :mod:`.site` (the export: the model, ``u2deploy.json``, the page and the module,
the runtime files), ``assets/`` (the JavaScript: ``u2deploy.mjs`` exports ``removeBackground``;
``processing.mjs`` and ``pillow.mjs`` port the ``fast`` pre/post-processing and Pillow's resize
exactly), :mod:`.runtime` (onnxruntime-web's files and the version pin), :mod:`.webgpu` (the max-pool
rewrite WebGPU needs), :mod:`.serve` (a local server with the COOP/COEP headers) and :mod:`.browser`
(headless Chromium for the tests and the benchmark).
"""

from __future__ import annotations

from .runtime import find_runtime, pinned_version
from .site import WebSite, export_web

__all__ = ["WebSite", "export_web", "find_runtime", "pinned_version"]
