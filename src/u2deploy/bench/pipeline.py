"""A bounded, threaded pipeline for folder jobs: load → infer → write, overlapped, committed in order.

``u2bench predict`` is decode + preprocess, the network, postprocess + encode, per image. Run one
after the other, the CPU work around the network adds to its time; here each runs in its own
threads, connected by bounded queues, so that they overlap (Pillow's codecs and resize, NumPy and
ONNX Runtime release the GIL):

- ``loaders`` threads take the items in order and call ``load(item) -> (x, keep)``: ``x`` the
  network input of one image (C×H×W), ``keep`` what the writer needs of it later (its size, or
  the image itself for a cut-out). A :class:`~u2deploy.errors.U2Error` there (an unreadable
  image) marks that item failed; the run goes on. Loaders hand their items on in input order.
- ``streams`` inference threads each gather up to ``batch`` loaded inputs (waiting at most
  50 ms for a batch to fill), stack them and call ``infer(x) -> maps`` (one map per row).
  Several streams run concurrently only where the runner allows it (ONNX Runtime sessions do;
  the caller decides).
- one writer thread calls ``write(item, keep, map)`` (or ``failed(item, error)``) strictly in
  input order, holding finished items back until those before them are done.

Memory stays flat however many items there are: at most ``in_flight`` items exist between the
start of their load and the end of their write (a semaphore), and every queue is bounded.

Stopping: any other exception (a failed write, an inference error, Ctrl-C in the main thread or
KeyboardInterrupt anywhere) stops the run: no new load or inference call starts (inputs a stream
has already taken are still inferred), and the writer still commits, in order, the items that
are complete up to the first one that is not, then discards the rest. So what was written is always every image before
the first unfinished one, and nothing after it. :func:`run` then raises that first exception.
A second Ctrl-C while the threads wind down (at most one inference call) is held back, so that no
thread is killed halfway through a file.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import U2Error

_END = object()  # end of a queue's stream
_LINGER_S = 0.05  # how long a stream waits for a batch to fill before running it short


@dataclass
class _Loaded:
    index: int
    x: np.ndarray | None
    keep: Any
    error: U2Error | None = None


class _Run:
    def __init__(self, items: Sequence[Any], load, infer, write, failed, batch: int, streams: int,
                 loaders: int, in_flight: int) -> None:
        self.items, self.load, self.infer, self.write, self.failed = items, load, infer, write, failed
        self.batch, self.streams, self.loaders = batch, streams, loaders
        self.tickets = threading.Semaphore(in_flight)
        self.loaded: queue.Queue = queue.Queue(maxsize=in_flight + streams)
        self.results: queue.Queue = queue.Queue(maxsize=in_flight + 1)
        self.next_item = 0
        self.next_handoff = 0
        self.lock = threading.Lock()
        self.turn = threading.Condition()
        self.loaders_left = loaders
        self.streams_left = streams
        self.stop = threading.Event()
        self.writer_stop = threading.Event()  # the writer itself failed: commit nothing more
        self.done = threading.Event()
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    # ---------------------------------------------------------------------------------- loaders
    def loader(self) -> None:
        try:
            while not self.stop.is_set():
                if not self.tickets.acquire(timeout=0.1):
                    continue
                with self.lock:
                    index = self.next_item
                    self.next_item += 1
                if index >= len(self.items) or self.stop.is_set():
                    self.tickets.release()
                    break
                try:
                    x, keep = self.load(self.items[index])
                    loaded = _Loaded(index, x, keep)
                except U2Error as exc:
                    loaded = _Loaded(index, None, None, exc)
                if not self._hand_off(loaded):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
            self.fail(exc)
        finally:
            with self.lock:
                self.loaders_left -= 1
                last = self.loaders_left == 0
            if last:
                for _ in range(self.streams):
                    self.loaded.put(_END)  # never blocks for long: the streams keep taking

    def _hand_off(self, loaded: _Loaded) -> bool:
        """Pass an item on in input order (several loaders finish out of order); False once stopped."""
        with self.turn:
            while self.next_handoff != loaded.index:
                if self.stop.is_set():
                    return False
                self.turn.wait(0.1)
            if self.stop.is_set():
                return False
            if loaded.error is not None:
                self._put(self.results, [loaded])  # failed: straight to the writer, in its place
            else:
                self._put(self.loaded, loaded)
            self.next_handoff += 1
            self.turn.notify_all()
        return True

    def _put(self, q: queue.Queue, value: Any) -> None:
        while True:
            try:
                q.put(value, timeout=0.1)
                return
            except queue.Full:
                if self.stop.is_set() and q is self.loaded:
                    return  # the streams have stopped taking; the item is dropped with the run

    # ---------------------------------------------------------------------------------- streams
    def stream(self) -> None:
        ended = False
        try:
            while not ended:
                first = self.loaded.get()
                if first is _END:
                    break
                if self.stop.is_set():
                    continue  # take no new work; keep draining so that the loaders never block
                group = [first]
                while len(group) < self.batch:
                    try:
                        more = self.loaded.get(timeout=_LINGER_S)
                    except queue.Empty:
                        break
                    if more is _END:
                        ended = True
                        break
                    group.append(more)
                maps = self.infer(np.stack([g.x for g in group]))  # work taken is finished, even if stopped
                for g in group:
                    g.x = None  # the input is no longer needed; only its map travels on
                self.results.put(list(zip(group, maps)))
        except BaseException as exc:  # noqa: BLE001
            self.fail(exc)
            while not ended:  # let the loaders finish: take what they still put
                ended = self.loaded.get() is _END
        finally:
            with self.lock:
                self.streams_left -= 1
                last = self.streams_left == 0
            if last:
                self.results.put(_END)

    # ----------------------------------------------------------------------------------- writer
    def writer(self) -> None:
        pending: dict[int, tuple[_Loaded, Any]] = {}
        next_index = 0
        try:
            while True:
                got = self.results.get()
                if got is _END:
                    break
                for entry in got:
                    loaded = entry if isinstance(entry, _Loaded) else entry[0]
                    pending[loaded.index] = entry if isinstance(entry, tuple) else (entry, None)
                while next_index in pending and not self.writer_stop.is_set():
                    loaded, pred = pending.pop(next_index)
                    try:
                        if loaded.error is not None:
                            self.failed(self.items[next_index], loaded.error)
                        else:
                            self.write(self.items[next_index], loaded.keep, pred)
                    except BaseException:
                        self.writer_stop.set()
                        raise
                    finally:
                        self.tickets.release()
                    next_index += 1
        except BaseException as exc:  # noqa: BLE001
            self.fail(exc)
            while self.results.get() is not _END:  # let the streams finish
                pass
        finally:
            self.done.set()


def run(items: Sequence[Any], load: Callable[[Any], tuple[np.ndarray, Any]],
        infer: Callable[[np.ndarray], np.ndarray], write: Callable[[Any, Any, np.ndarray], None],
        failed: Callable[[Any, U2Error], None], *, batch: int = 1, streams: int = 1, loaders: int = 1,
        in_flight: int | None = None) -> None:
    """Load, infer and write every item (see the module docstring); raises the first fatal error."""
    if not items:
        return
    batch, streams, loaders = max(1, batch), max(1, streams), max(1, loaders)
    in_flight = max(in_flight or 0, 2 * batch * streams + loaders)
    state = _Run(items, load, infer, write, failed, batch, streams, loaders, in_flight)
    threads = ([threading.Thread(target=state.loader, name=f"u2-load-{i}", daemon=True) for i in range(loaders)]
               + [threading.Thread(target=state.stream, name=f"u2-infer-{i}", daemon=True) for i in range(streams)]
               + [threading.Thread(target=state.writer, name="u2-write", daemon=True)])
    for thread in threads:
        thread.start()
    try:
        while not state.done.wait(0.2):
            pass
    except KeyboardInterrupt as exc:
        state.fail(exc)
    while True:  # a second Ctrl-C must not kill a thread halfway through a file
        try:
            for thread in threads:
                thread.join()
            break
        except KeyboardInterrupt:
            continue
    if state.error is not None:
        raise state.error
