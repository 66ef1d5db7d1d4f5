"""A one-command local server for a site: ``python -m u2deploy.export.web.serve SITE [--port 8000]``.

Threaded WASM needs ``SharedArrayBuffer``, which a browser grants only to a cross-origin isolated
page: one served with ``Cross-Origin-Opener-Policy: same-origin`` and
``Cross-Origin-Embedder-Policy: require-corp``. Python's ``http.server`` sends neither (the page then
runs on one thread); this one sends both, with the ``.mjs`` and ``.wasm`` content types browsers insist
on. It listens on 127.0.0.1 unless told otherwise: it is for trying a site, not for hosting one.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ...errors import U2Error
from .site import HEADERS, SPEC_FILE


class IsolatedHandler(SimpleHTTPRequestHandler):
    """Static files, with the headers that make the page cross-origin isolated."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
                      ".onnx": "application/octet-stream"}
    quiet = True

    def end_headers(self) -> None:
        for header in HEADERS:
            name, _, value = header.partition(": ")
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        if not self.quiet:
            super().log_message(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A browser that drops a connection (a page closed mid-download) is no server error."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _server(site: Path, host: str, port: int, quiet: bool) -> ThreadingHTTPServer:
    if not (site / SPEC_FILE).is_file():
        raise U2Error(f"{site}: not a site (no {SPEC_FILE}); write one with u2export web MODEL -o {site}")
    handler = partial(type("Handler", (IsolatedHandler,), {"quiet": quiet}), directory=str(site))
    try:
        return _Server((host, port), handler)
    except OSError as exc:
        raise U2Error(f"{host}:{port}: cannot listen there ({exc.strerror or exc})") from None


@contextlib.contextmanager
def serving(site: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``site`` in a background thread (an ephemeral port by default); yields its URL, stops on exit."""
    server = _server(Path(site), host, port, quiet=True)
    thread = threading.Thread(target=server.serve_forever, name="u2web-serve", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def serve_forever(site: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until Ctrl-C, printing the URL first."""
    server = _server(Path(site), host, port, quiet=False)
    print(f"serving {site} at http://{host}:{server.server_address[1]}/ with COOP/COEP (threaded WASM) · "
          "Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m u2deploy.export.web.serve", description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the folder u2export web wrote")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    args = parser.parse_args(argv)
    try:
        serve_forever(args.site, args.host, args.port)
    except U2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
