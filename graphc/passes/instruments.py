"""Instruments watch a PassManager run: verify, dump, time, check numerics, explain."""
from __future__ import annotations

import sys
import time
from typing import IO, Iterable

import numpy as np

from ..errors import GraphcError


class Instrument:
    wants_log = False

    def start(self, graph) -> None:
        pass

    def before_pass(self, name: str, graph) -> None:
        pass

    def after_pass(self, name: str, graph, events: list) -> None:
        pass

    def finish(self, graph) -> None:
        pass


class VerifyIR(Instrument):
    """Run :func:`graphc.verify` on the input graph and after every pass."""

    def start(self, graph):
        from ..ir.verify import verify
        verify(graph)

    def after_pass(self, name, graph, events):
        from ..ir.verify import verify
        from ..errors import VerifyError
        try:
            verify(graph)
        except VerifyError as e:
            raise VerifyError(f"after pass {name!r}: {e.message}", op=e.op, node=e.node,
                              loc=e.loc) from None


class DumpIR(Instrument):
    """Print the IR after the named passes (all when ``after`` is None); ``dot=True``
    writes Graphviz DOT instead of text."""

    def __init__(self, after: Iterable[str] | None = None, dot: bool = False,
                 stream: IO | None = None):
        self.after = set(after) if after is not None else None
        self.dot = dot
        self.stream = stream or sys.stdout
        self.seen: list[str] = []

    def after_pass(self, name, graph, events):
        if self.after is not None and name not in self.after:
            return
        self.seen.append(name)
        if self.dot:
            self.stream.write(graph.to_dot())
        else:
            self.stream.write(f"// after {name}\n{graph}\n")


class TimePasses(Instrument):
    """Wall time of every pass; ``report()`` gives a table."""

    def __init__(self):
        self.times: list[tuple[str, float]] = []
        self._t0 = 0.0

    def before_pass(self, name, graph):
        self._t0 = time.perf_counter()

    def after_pass(self, name, graph, events):
        self.times.append((name, time.perf_counter() - self._t0))

    def report(self) -> str:
        total = sum(t for _, t in self.times) or 1e-12
        lines = [f"{'pass':16s} {'ms':>9s} {'%':>6s}"]
        for name, t in self.times:
            lines.append(f"{name:16s} {t * 1e3:9.2f} {100 * t / total:6.1f}")
        lines.append(f"{'total':16s} {total * 1e3:9.2f}")
        return "\n".join(lines)


class NumericError(GraphcError):
    """A pass changed what the graph computes."""


class NumericCheck(Instrument):
    """Run the float64 reference on random inputs before the pipeline and after every
    pass; the first pass whose result moves by more than ``tol`` (relative norm error per
    output, against the result before that pass) raises :class:`NumericError` naming the
    pass, the output and the error. ``tol`` defaults to 1e-10 for graphs whose constants are
    all float64 and 1e-6 otherwise (folding into float32 weights rounds once)."""

    def __init__(self, seed: int = 0, tol: float | None = None, sizes=None, trials: int = 1):
        self.seed = seed
        self.tol = tol
        self.sizes = sizes
        self.trials = trials
        self.history: list[tuple[str, float]] = []

    def _run(self, graph):
        from ..runtime.interpreter import run_graph
        return [run_graph(graph, arrays, bindings, float64=True)
                for arrays, bindings in self.cases]

    def start(self, graph):
        from ..runtime.inputs import random_inputs
        rng = np.random.default_rng(self.seed)
        self.cases = [random_inputs(graph, rng, self.sizes) for _ in range(self.trials)]
        if self.tol is None:
            f32 = any(v.dtype == np.float32 for v in graph.constants.values()) or \
                any(t.dtype == "float32" for t in graph.input_types)
            self.tol = 1e-6 if f32 else 1e-10
        self.results = self._run(graph)

    def after_pass(self, name, graph, events):
        new = self._run(graph)
        worst = 0.0
        for case, (old_outs, new_outs) in enumerate(zip(self.results, new)):
            if len(old_outs) != len(new_outs):
                raise NumericError(f"pass {name!r} changed the number of outputs from "
                                   f"{len(old_outs)} to {len(new_outs)}")
            for k, (a, b) in enumerate(zip(old_outs, new_outs)):
                if a.shape != b.shape:
                    raise NumericError(f"pass {name!r} changed output {k} from shape "
                                       f"{a.shape} to {b.shape}")
                err = _rel_err(b, a)
                worst = max(worst, err)
                if not err <= self.tol:
                    node = graph.nodes[graph.outputs[k]]
                    raise NumericError(
                        f"pass {name!r} changed the result: output {k} ({node.name}, "
                        f"{node.type}) moved by relative error {err:.3e} > tolerance "
                        f"{self.tol:g} (inputs: {', '.join(str(a.shape) for a in self.cases[case][0])})",
                        op=node.op, node=node.name, loc=node.loc)
        self.history.append((name, worst))
        self.results = new


def _rel_err(b: np.ndarray, a: np.ndarray) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    fin = np.isfinite(a)
    if not np.array_equal(fin, np.isfinite(b)) or not np.array_equal(a[~fin], b[~fin]):
        return float("inf")
    na = np.linalg.norm(a[fin])
    diff = np.linalg.norm(a[fin] - b[fin])
    return float(diff / na) if na > 0 else float(diff)


class Explain(Instrument):
    """Collect what the passes say they did: rules fired (where), rules that did not fire
    on a candidate (why), fusion groups formed. ``report()`` gives readable text."""

    wants_log = True

    def __init__(self):
        self.events: list[dict] = []

    def after_pass(self, name, graph, events):
        self.events.extend(events)

    def fired(self, rule: str | None = None) -> list[dict]:
        return [e for e in self.events if e["kind"] == "fired"
                and (rule is None or e.get("rule") == rule)]

    def missed(self, rule: str | None = None) -> list[dict]:
        return [e for e in self.events if e["kind"] == "missed"
                and (rule is None or e.get("rule") == rule)]

    def report(self) -> str:
        lines = []
        for e in self.events:
            lines.append(f"[{e['pass']}] {e['kind']}: {e['message']}")
        return "\n".join(lines) if lines else "(no events)"
