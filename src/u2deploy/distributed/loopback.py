"""A Ray cluster of several nodes on 127.0.0.1 of a private network namespace: for tests and benchmarks.

Ray binds the machine's external interface by default, and probes the network to find it. A test
or a benchmark must reach nothing: :func:`run_steps_isolated` re-executes this module under
``unshare`` in a new network namespace (only a loopback interface, brought up here; the module
refuses to start a node where it sees any other) and a new PID namespace, whose processes the
kernel ends together when its first process ends: a timeout that kills ``unshare`` takes every Ray
process with it.

Inside, :class:`LoopbackCluster` runs ``ray start --head`` and ``ray start --address`` once per
node, each node in a session of its own (its raylet, agents and workers keep it), so that
:meth:`~LoopbackCluster.kill_node` is SIGKILL to every process of that session at once (the machine is
gone) and :meth:`~LoopbackCluster.stop` ends them all, by process id, with a time bound.

The steps are commands (``u2bench predict --ray ADDRESS`` …, where ``{address}`` in an argument
becomes the head's address), run one after the other; a step can kill a node, or send Ctrl-C to
its command, once a folder holds a number of files. Each step's result: exit status, output,
seconds, the command's peak RSS and CPU seconds, and each node's peak memory (the PSS of its
processes, summed: shared pages counted once) and CPU seconds during the step.

    python -m u2deploy.distributed.loopback --cpus 1,1 --steps steps.json --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import U2Error

HOST = "127.0.0.1"
PORT = 6379
_UNSHARE = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]


@cache
def namespace_prefix() -> tuple[tuple[str, ...] | None, str]:
    """The ``unshare`` prefix that works here (as root, else in a user namespace), or None and why not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None, "needs unshare and ip (util-linux, iproute2)"
    why = ""
    for extra in ([], ["--map-root-user"]):
        prefix = (*_UNSHARE, *extra)
        try:
            probe = subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], capture_output=True, text=True,
                                   timeout=30)
        except subprocess.TimeoutExpired:
            return None, "unshare did not return in 30 s"
        if probe.returncode == 0:
            return prefix, ""
        why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
    return None, f"a private network namespace is not permitted here ({why})"


def _isolate() -> None:
    """Bring up ``lo``, and refuse to go on in a namespace that has any other interface."""
    others = sorted({name for _, name in socket.if_nameindex()} - {"lo"})
    if others:
        raise U2Error(f"not in a private network namespace (interfaces: {', '.join(others)}); "
                      "run through run_steps_isolated")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


class LoopbackCluster:
    """Ray nodes on 127.0.0.1 (``cpus[k]`` CPUs each; node 0 is the head), each in its own session.

    Ray runs its workers at niceness 15, so that its own daemons come first. On a machine shared with
    other work that hands the CPU to everyone else's processes, whereas the command a benchmark compares
    with runs at 0: the loopback nodes run their workers at 0 (``RAY_worker_niceness``).
    """

    def __init__(self, cpus: Sequence[int] = (1, 1), object_store_mb: int = 300) -> None:
        self.cpus = list(cpus)
        self.object_store_mb = object_store_mb
        self.sessions: list[int] = []  # each node's session id: that of its `ray start`, which every process keeps
        self.temp = Path(tempfile.mkdtemp(prefix="u2ray.", dir="/tmp"))  # short: Ray's socket paths
        self.address = f"{HOST}:{PORT}"
        self.start_s: list[float] = []

    def start(self) -> str:
        for k, cpus in enumerate(self.cpus):
            common = ["--node-ip-address", HOST, "--num-cpus", str(cpus), "--num-gpus", "0",
                      "--object-store-memory", str(self.object_store_mb * 10**6), "--disable-usage-stats"]
            head = ["--head", "--port", str(PORT), "--include-dashboard=false", "--temp-dir", str(self.temp)]
            cmd = [_ray_cli(), "start", *(head if k == 0 else ["--address", self.address]), *common]
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True, env={**os.environ, "RAY_worker_niceness": "0"})
            self.sessions.append(proc.pid)
            try:
                out, _ = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                self.stop()
                raise U2Error(f"ray start (node {k}) did not finish in 180 s") from None
            if proc.returncode:
                self.stop()
                raise U2Error(f"ray start (node {k}) failed: {out.strip().splitlines()[-1:]}")
            self.start_s.append(time.perf_counter() - started)
        return self.address

    def kill_node(self, k: int) -> None:
        """SIGKILL every process of node ``k`` at once: what a lost machine looks like to the others."""
        if k == 0:
            raise ValueError("node 0 is the head; a job does not survive it")
        self._signal([self.sessions[k]], signal.SIGKILL)

    def _members(self) -> dict[int, list[tuple[int, list[str]]]]:
        """Each node's processes now (pid, /proc stat fields after the name), by session: Ray puts each
        worker in a process group of its own, but every process keeps its node's session."""
        members: dict[int, list[tuple[int, list[str]]]] = {s: [] for s in self.sessions}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    fields = stat[stat.rindex(")") + 2:].split()
                    session = int(fields[3])
                except (OSError, ValueError, IndexError):
                    continue  # it ended meanwhile
                if session in members:
                    members[session].append((int(entry), fields))
        return members

    def _signal(self, sessions: Sequence[int], sig: int) -> None:
        members = self._members()
        for session in sessions:
            for pid, _ in members[session]:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def node_memory(self) -> list[int]:
        """Bytes of memory each node's processes hold now: their PSS summed (shared pages, such as the
        object store's, split among the processes that map them, so that none counts twice)."""
        totals = []
        for processes in self._members().values():
            total = 0
            for pid, _ in processes:
                try:
                    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                    total += int(rollup.split("\nPss:", 1)[1].split()[0]) * 1024
                except (OSError, ValueError, IndexError):
                    pass
            totals.append(total)
        return totals

    def node_cpu_s(self) -> list[dict[int, float]]:
        """CPU seconds each process of each node has used so far, by pid (an ended process's are gone:
        Ray's daemons reap their workers without adding them to their own, so callers sample)."""
        tick = os.sysconf("SC_CLK_TCK")
        return [{pid: (int(fields[11]) + int(fields[12])) / tick for pid, fields in processes}
                for processes in self._members().values()]

    def stop(self, timeout_s: float = 30) -> None:
        """End every node's processes (SIGTERM, then SIGKILL after ``timeout_s``), then Ray's files."""
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10)):
            self._signal(self.sessions, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(self._members().values()):
                time.sleep(0.2)
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _count_files(folder: str) -> int:
    try:
        return sum(1 for name in os.listdir(folder) if not name.startswith(".") and name.endswith(".png"))
    except OSError:
        return 0


def run_step(step: dict[str, Any], cluster: LoopbackCluster) -> dict[str, Any]:
    """Run one command (``step["cmd"]``); ``step["when"]`` = {"folder", "files", "kill_node" | "interrupt"}
    acts once the folder holds that many PNG files. Bounded by ``step["timeout_s"]`` (default 600)."""
    cmd = [a.replace("{address}", cluster.address) for a in step["cmd"]]
    when = step.get("when")
    peak = [0] * len(cluster.sessions)
    fired: dict[str, Any] = {}
    cpu_first = cluster.node_cpu_s()  # per node, pid: CPU seconds when first seen, and when last seen
    cpu_last = [dict(d) for d in cpu_first]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output: dict[str, str] = {}
    readers = [threading.Thread(target=lambda n=n, p=p: output.__setitem__(n, p.read()))
               for n, p in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for reader in readers:
        reader.start()
    done = threading.Event()
    result: dict[str, Any] = {}

    def reap() -> None:
        _, status, usage = os.wait4(proc.pid, 0)
        result.update(rc=os.waitstatus_to_exitcode(status), seconds=time.perf_counter() - started,
                      peak_rss_command=usage.ru_maxrss * 1024, cpu_s_command=usage.ru_utime + usage.ru_stime)
        proc.returncode = result["rc"]
        done.set()

    reaper = threading.Thread(target=reap)
    reaper.start()
    deadline = time.monotonic() + step.get("timeout_s", 600)
    next_sample = 0.0
    while not done.wait(0.1):
        _sample_cpu(cluster, cpu_first, cpu_last)
        if time.monotonic() >= next_sample:  # reading every process's page tables costs CPU: once a second
            peak = [max(a, b) for a, b in zip(peak, cluster.node_memory())]
            next_sample = time.monotonic() + 1
        if when and not fired and _count_files(when["folder"]) >= when["files"]:
            fired = {"at_files": _count_files(when["folder"]), "at_s": time.perf_counter() - started}
            if "kill_node" in when:
                cluster.kill_node(when["kill_node"])
            else:
                proc.send_signal(signal.SIGINT)
        if time.monotonic() > deadline:
            proc.kill()
            result["timed_out"] = True
    reaper.join()
    for reader in readers:
        reader.join()
    _sample_cpu(cluster, cpu_first, cpu_last)
    cpu_nodes = [sum(last[pid] - first.get(pid, 0.0) for pid in last) for first, last in zip(cpu_first, cpu_last)]
    started_nodes = [sum(1 for pid in last if first.get(pid) == 0.0) for first, last in zip(cpu_first, cpu_last)]
    return {"name": step.get("name", cmd[0]), **result, "stdout": output.get("stdout", ""),
            "stderr": output.get("stderr", ""), "fired": fired, "peak_memory_nodes": peak, "cpu_s_nodes": cpu_nodes,
            "processes_started_nodes": started_nodes}


def _sample_cpu(cluster: LoopbackCluster, first: list[dict[int, float]], last: list[dict[int, float]]) -> None:
    """Fold the nodes' CPU seconds now into ``last`` (a process that starts now starts from 0 in ``first``)."""
    for node, now in enumerate(cluster.node_cpu_s()):
        for pid, seconds in now.items():
            if pid not in last[node]:
                first[node][pid] = 0.0  # it started during the step
            last[node][pid] = seconds


def run_steps_isolated(steps: Sequence[dict[str, Any]], cpus: Sequence[int], workdir: Path,
                       timeout_s: float = 900, object_store_mb: int = 300) -> dict[str, Any]:
    """Start a loopback cluster in private namespaces, run ``steps``, stop it; everything ends within
    ``timeout_s`` (the namespace's processes are killed with it). U2Error where namespaces are not permitted."""
    prefix, why = namespace_prefix()
    if prefix is None:
        raise U2Error(why)
    steps_file, out_file = workdir / "steps.json", workdir / "results.json"
    steps_file.write_text(json.dumps(list(steps)))
    out_file.unlink(missing_ok=True)
    cmd = [*prefix, sys.executable, "-m", __name__, "--cpus", ",".join(map(str, cpus)),
           "--object-store-mb", str(object_store_mb), "--steps", str(steps_file), "--out", str(out_file)]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise U2Error(f"the loopback cluster's steps did not finish in {timeout_s:g} s") from None
    if run.returncode or not out_file.is_file():
        raise U2Error(f"the loopback cluster failed (exit {run.returncode}): {run.stderr.strip()[-2000:]}")
    return json.loads(out_file.read_text())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", default="1,1", help="CPUs per node, head first")
    parser.add_argument("--object-store-mb", type=int, default=300)
    parser.add_argument("--steps", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    _isolate()
    steps = json.loads(args.steps.read_text())
    cluster = LoopbackCluster([int(c) for c in args.cpus.split(",")], args.object_store_mb)
    try:
        cluster.start()
        idle_memory = cluster.node_memory()
        results = [run_step(step, cluster) for step in steps]
    finally:
        cluster.stop()
    args.out.write_text(json.dumps({"address": cluster.address, "start_s": cluster.start_s,
                                    "idle_memory_nodes": idle_memory, "steps": results}, indent=1))


if __name__ == "__main__":
    main()
