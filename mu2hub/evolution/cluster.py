"""The processes of one training job, and the few points where they meet (multi-host, spec §6 scale-out).

Every process runs the same command and the same loop from the same state, so they draw the same mutations
from the same RNG without talking. They meet only to (1) check at start that they run the same job, (2) take
the run directory's mutable state (agent state, other tasks' best paths, the compare-and-swap of a task file)
as process 0 reads or decides it, and (3) hand each other the children they trained. Only process 0 writes the
run directory. Every exchange is a JAX collective over all devices (`multihost_utils.process_allgather`):
when a process dies, the others' next exchange fails within seconds ("connection closed by peer"), and
`ClusterError` names what the job was doing; JAX's coordination service also stops every process once a dead
one misses its heartbeats. `Cluster()` is the one-process job: every exchange returns at once.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import ClusterError, CoordinatorUnreachableError, JobMismatchError


@dataclass(frozen=True)
class Cluster:
    """This process's place in the job. `chunk_bytes` bounds the device memory one exchange round takes."""

    process_index: int = 0
    process_count: int = 1
    chunk_bytes: int = 32 << 20

    @property
    def is_primary(self) -> bool:
        """Process 0: the one that reads the run directory's mutable state and writes everything."""
        return self.process_index == 0

    # -- transport ------------------------------------------------------------------------------
    def allgather(self, data: bytes, what: str) -> list[bytes]:
        """Every process's `data`, in process order (in rounds of at most `chunk_bytes` per process)."""
        if self.process_count == 1:
            return [data]
        sizes = [int(n) for n in self._gather(np.array([len(data)], np.int64), what)[:, 0]]
        parts: list[list[bytes]] = [[] for _ in sizes]
        for start in range(0, max(sizes), self.chunk_bytes):
            size = min(self.chunk_bytes, max(sizes) - start)
            piece = np.zeros(size, np.uint8)
            mine = data[start:start + size]
            piece[:len(mine)] = np.frombuffer(mine, np.uint8)
            for p, row in enumerate(self._gather(piece, what)):
                parts[p].append(row[:max(0, min(size, sizes[p] - start))].tobytes())
        return [b"".join(p) for p in parts]

    def _gather(self, array: np.ndarray, what: str) -> np.ndarray:
        from jax.experimental import multihost_utils

        try:
            return np.asarray(multihost_utils.process_allgather(array))
        except (RuntimeError, ValueError) as e:  # a lost peer surfaces as either (JaxRuntimeError, or from jit)
            raise ClusterError(f"process {self.process_index} of {self.process_count}: another process stopped "
                               f"answering while {what} ({str(e).splitlines()[0]}); every process stops: restart the "
                               "whole job with --resume (it continues from the last complete generation)") from e

    def broadcast(self, value: Any, what: str) -> Any:
        """Process 0's JSON-able `value`, decoded on every process (process 0 included: all hold equal values)."""
        data = json.dumps(value, sort_keys=True).encode() if self.is_primary else b""
        return json.loads(self.allgather(data, what)[0]) if self.process_count > 1 else json.loads(data)

    def barrier(self, what: str) -> None:
        self.allgather(b"", what)

    # -- agreement ----------------------------------------------------------------------------------
    def check_same(self, value: dict[str, Any], what: str) -> None:
        """Raise `JobMismatchError` on every process unless all hold an equal JSON-able dict (e.g. the config)."""
        mine = json.dumps(value, sort_keys=True).encode()
        got = [json.loads(b) for b in self.allgather(mine, f"comparing the processes' {what}")]
        for p, other in enumerate(got):
            if other != got[0]:
                raise JobMismatchError(f"process {p} was started with another {what} than process 0 (differs in: "
                                       f"{', '.join(_differences(got[0], other))}); every process of a job must run "
                                       "the same command")

    def on_primary(self, fn: Callable[[], Any], what: str) -> Any:
        """`fn()` on process 0 only, its JSON-able result (or its error) handed to every process."""
        outcome: dict[str, Any] = {}
        error: Exception | None = None
        if self.is_primary:
            try:
                outcome = {"ok": fn()}
            except Exception as e:  # every process must learn of it, or the others would wait for process 0
                error, outcome = e, {"error": f"{type(e).__name__}: {e}"}
        got = self.broadcast(outcome, what)
        if error is not None:
            raise error
        if "error" in got:
            raise ClusterError(f"process 0 failed while {what}: {got['error']}")
        return got["ok"]

    def all_ok(self, fn: Callable[[], Any], what: str) -> Any:
        """`fn()` on every process; if any raised, every process raises (its own error, or which process failed)."""
        error: Exception | None = None
        try:
            result = fn()
        except Exception as e:
            error, result = e, None
        status = json.dumps({"error": f"{type(error).__name__}: {error}"} if error else {}).encode()
        failed = [(p, json.loads(s)["error"]) for p, s in enumerate(self.allgather(status, what)) if s != b"{}"]
        if error is not None:
            raise error
        if failed:
            p, message = failed[0]
            raise ClusterError(f"process {p} failed while {what}: {message}")
        return result


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON values differ (`config.generations`)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [prefix or "(value)"] if a != b else []
    return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}" if not prefix
                                                                      else f"{prefix}.{k}")]


def connect(coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None,
            *, timeout_s: float = 300, heartbeat_s: float = 100, chunk_bytes: int = 32 << 20) -> Cluster:
    """Join (or form) the job with `jax.distributed.initialize`; arguments left None are auto-detected (TPU pod
    slices, Slurm, Open MPI). Must run before JAX touches a device.

    Raises:
        CoordinatorUnreachableError: a process other than 0 could not reach `coordinator_address` in `timeout_s`.
        ClusterError: JAX could not form the job.
    """
    _check_job(coordinator_address, num_processes, process_id)
    import jax

    if not jax.distributed.is_initialized():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices of several processes
        if coordinator_address and process_id not in (None, 0):
            _wait_for(coordinator_address, timeout_s)
        elif coordinator_address:
            print(f"[mu2hub] process 0 of {num_processes}: coordinator on {coordinator_address}, waiting up to "
                  f"{timeout_s:.0f} s for the other processes", file=sys.stderr, flush=True)
        try:
            jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                       initialization_timeout=int(timeout_s), heartbeat_timeout_seconds=int(heartbeat_s))
        except (RuntimeError, ValueError) as e:
            raise ClusterError(f"could not form the multi-host job (coordinator {coordinator_address or 'auto'}, "
                               f"{num_processes or 'auto'} processes, this one {process_id}): {e}") from e
    return Cluster(jax.process_index(), jax.process_count(), chunk_bytes)


def _check_job(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Refuse a job description that can never form before anyone waits on it (a process id outside the job would
    wait for the coordinator's whole timeout)."""
    def bad(why: str) -> ClusterError:
        return ClusterError(f"cannot form the multi-host job (coordinator {coordinator_address or 'auto'}, "
                            f"{num_processes or 'auto'} processes, this one {process_id}): {why}")

    if num_processes is not None and num_processes < 1:
        raise bad("--num-processes must be at least 1")
    if process_id is not None and (process_id < 0 or (num_processes is not None and process_id >= num_processes)):
        raise bad(f"--process-id must be in 0..{num_processes - 1 if num_processes else 'N-1'}")
    if coordinator_address is not None:
        host, sep, port = coordinator_address.rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            raise bad("--coordinator must be HOST:PORT (e.g. 10.0.0.2:1234)")


def _wait_for(address: str, timeout_s: float) -> None:
    """Until the coordinator accepts a TCP connection: JAX itself aborts the process if it never does."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=min(5.0, timeout_s)).close()
            return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise CoordinatorUnreachableError(
                    f"coordinator {address} did not answer within {timeout_s:.0f} s ({e}): start process 0 first (it "
                    "hosts the coordinator), and check the address, the port and the firewall") from e
            time.sleep(0.5)
