"""Peers that take turns: each peer of a benchmark is a worker process (OpenMP and BLAS
thread pools spin after work and would slow whoever ran next in the same process), kept
up for the whole run, and the parent asks each in turn for a few timed calls of one
size, over several rounds with a pause between turns. A slow spell of a shared machine
(this one's times can double for seconds) then falls on every peer alike, where peers
run one after another would each see a different minute.

Worker side, in the peer's process::

    serve(info, prepare)

``info`` (a dict: load and compile times) is the first line the parent reads;
``prepare(key)`` is called at the first request of a size ``key`` (a string) and returns
``(run, check)``: ``run()`` is one call, ``check(out)`` the dict the parent gets about the
first call's output (an error against a reference, or {}). Then requests ``KEY N`` are
answered with N times in ms, one line of JSON each; ``quit`` ends.

Parent side: :class:`Peer` starts a worker (its command line and environment),
:func:`take_turns` runs the rounds. The benchmarks that use it: onnx_models.py,
transformer_layer.py, threads.py, torch_compile.py (the shared protocol is here, once).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time


def serve(info: dict, prepare) -> None:
    """Answer the parent's requests on stdin until ``quit`` (above)."""
    print(json.dumps(info), flush=True)
    ready: dict = {}
    for line in sys.stdin:
        line = line.strip()
        if line == "quit":
            break
        key, n = line.rsplit(" ", 1)
        answer: dict = {}
        if key not in ready:
            run, check = prepare(key)
            answer["check"] = check(run())   # the warm-up call (first-call costs)
            ready[key] = run
        run = ready[key]
        times = []
        for _ in range(int(n)):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1e3)
        answer["times"] = times
        print(json.dumps(answer), flush=True)


class Peer:
    """A worker process (:func:`serve`) the parent asks for timed runs: ``times[key]``
    (ms), ``checks[key]`` (what the worker said about the first output)."""

    def __init__(self, name: str, cmd: list, env=None):
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.info = self._answer()
        self.times: dict = {}
        self.checks: dict = {}
        self.error: str | None = None

    def _answer(self):
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines() or ["?"]
            raise RuntimeError(f"{self.name} failed: {err[-1]}")
        return json.loads(line)

    def run(self, key: str, n: int) -> None:
        self.proc.stdin.write(f"{key} {n}\n")
        self.proc.stdin.flush()
        answer = self._answer()
        if "check" in answer:
            self.checks[key] = answer["check"]
        self.times.setdefault(key, []).extend(answer["times"])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def start(specs) -> tuple[list, list]:
    """Peers started one after another (each load and compile timed alone) from
    ``specs`` [(name, cmd, env)]: (the running Peers, the errors of those that failed)."""
    ok, errors = [], []
    for name, cmd, env in specs:
        try:
            ok.append(Peer(name, cmd, env))
        except RuntimeError as e:
            errors.append(str(e))
    return ok, errors


def plan(repeat: int, rounds: int) -> tuple[int, int]:
    """(rounds, calls per round) for at least ``repeat`` timed calls in (at most)
    ``rounds`` rounds: their product is the number of calls each peer makes per size."""
    rounds = max(1, min(rounds, repeat))
    return rounds, max(1, -(-repeat // rounds))


def calls(repeat: int, rounds: int) -> int:
    """The timed calls each peer makes per size (:func:`plan`)."""
    r, n = plan(repeat, rounds)
    return r * n


def take_turns(peers, keys, repeat: int, rounds: int, pause: float = 0.3) -> None:
    """``rounds`` rounds in which every peer in turn runs ``repeat / rounds`` calls
    (rounded up; :func:`plan`) of each size of ``keys`` (the order of the peers rotating), ``pause`` s apart (a pool
    that spins after its work settles). A peer that fails is closed, its error kept in
    ``peer.error``; the others go on. Every peer is closed at the end."""
    rounds, per_round = plan(repeat, rounds)
    try:
        for r in range(rounds):
            live = [p for p in peers if p.error is None]
            if not live:
                break
            turn = live[r % len(live):] + live[:r % len(live)]
            for key in keys:
                for peer in turn:
                    if peer.error is not None:
                        continue
                    time.sleep(pause)
                    try:
                        peer.run(key, per_round)
                    except (RuntimeError, OSError, ValueError) as e:
                        peer.error = str(e)
                        peer.close()
    finally:
        for peer in peers:
            peer.close()
