"""Per-step times of a compiled graph: where a call spends its time.

``exe.profile(*arrays, repeat=5)`` runs the executable once to warm it up, then ``repeat``
times with a clock around every step (a fused group of the Program, or a node on the
reference backend) and returns a :class:`Profile`: the median time of each step, grouped
for printing by what the step computes (kind, ops, output shape) with the user's source
line. A GPU backend synchronises before reading the clock, so its step times include
the launch and the kernel; the whole call is also timed without the per-step clock, and
the table reports what the steps do not account for (Python, allocation, checks), taken
within the timed calls themselves. Percentages are of the step-by-step call (the steps'
medians plus the time outside them), so the groups and "outside the steps" add up to
100%.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

# Body ops that only move or name data: left out of a step's description unless the
# step does nothing else (then it is a copy: "slice", "concat", ...).
_QUIET_OPS = {"input", "constant", "reshape", "transpose"}


class StepTimer:
    """Collects seconds per step key over several calls; ``sync`` (a GPU backend's
    synchronise) runs before each clock read."""

    def __init__(self, sync=None):
        self.sync = sync
        self.times: dict = {}
        self.elapsed = 0.0          # seconds inside steps, all calls together

    def start(self) -> float:
        if self.sync is not None:
            self.sync()
        return time.perf_counter()

    def stop(self, key, t0: float) -> None:
        if self.sync is not None:
            self.sync()
        dt = time.perf_counter() - t0
        self.times.setdefault(key, []).append(dt)
        self.elapsed += dt


@dataclass
class StepTime:
    """One step: its node, kind (kernel, gemm, attention, library; op on the reference
    backend), the ops it computes, its output shape, the user's line and the median
    seconds of one call."""
    node: str
    kind: str
    ops: str
    shape: tuple
    loc: str
    seconds: float


@dataclass
class ProfileGroup:
    kind: str
    ops: str
    shape: tuple
    locs: list
    calls: int        # steps of one call in this group (e.g. one per layer)
    seconds: float    # their median seconds summed


class Profile:
    """Step times of one executable on one set of inputs (see the module docstring)."""

    def __init__(self, label: str, steps: list[StepTime], total: float, repeat: int,
                 outside: float = 0.0):
        self.label = label
        self.steps = steps
        self.total = total              # median seconds of a whole call, no step clock
        self.repeat = repeat
        # median over the timed calls of (the call's time - its steps' times): Python,
        # allocation and checks between the steps, measured within the same calls (the
        # untimed calls' median minus the steps' medians would mix two moments of a
        # machine whose speed drifts)
        self.outside = outside

    @property
    def step_seconds(self) -> float:
        return float(sum(s.seconds for s in self.steps))

    def groups(self) -> list[ProfileGroup]:
        """Steps that compute the same thing on the same shape, most time first."""
        out: dict[tuple, ProfileGroup] = {}
        for s in self.steps:
            key = (s.kind, s.ops, s.shape)
            g = out.get(key)
            if g is None:
                g = out[key] = ProfileGroup(s.kind, s.ops, s.shape, [], 0, 0.0)
            g.calls += 1
            g.seconds += s.seconds
            if s.loc and s.loc not in g.locs:
                g.locs.append(s.loc)
        return sorted(out.values(), key=lambda g: -g.seconds)

    def by_kind(self) -> dict[str, float]:
        """Seconds per step kind, most first."""
        kinds: dict[str, float] = {}
        for s in self.steps:
            kinds[s.kind] = kinds.get(s.kind, 0.0) + s.seconds
        return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))

    @property
    def wall(self) -> float:
        """Seconds of one call timed step by step: the steps' medians plus the median
        time outside them. The table's percentages are of this, so the groups and the
        share outside the steps add up to 100%."""
        return self.step_seconds + self.outside

    def percent(self, seconds: float) -> float:
        return 100.0 * seconds / max(self.wall, 1e-12)

    def table(self, top: int = 20) -> str:
        pct = self.percent
        lines = [f"profile of {self.label}: {self.total * 1e3:.2f} ms a call (median of "
                 f"{self.repeat}); timed step by step {self.wall * 1e3:.2f} ms = "
                 f"{len(self.steps)} steps {self.step_seconds * 1e3:.2f} ms + outside the "
                 f"steps {self.outside * 1e3:.2f} ms (% below: of these "
                 f"{self.wall * 1e3:.2f} ms)",
                 f"{'ms':>9s} {'%':>5s} {'calls':>5s}  {'kind':9s} {'ops':34s} "
                 f"{'shape':18s} where"]
        groups = self.groups()
        for g in groups[:top]:
            where = ", ".join(g.locs[:2]) + (" ..." if len(g.locs) > 2 else "")
            ops = g.ops if len(g.ops) <= 34 else g.ops[:31] + "..."
            lines.append(f"{g.seconds * 1e3:9.3f} {pct(g.seconds):5.1f} "
                         f"{g.calls:5d}  {g.kind:9s} {ops:34s} "
                         f"{str(list(g.shape)):18s} {where}")
        rest = groups[top:]
        if rest:
            sec = sum(g.seconds for g in rest)
            lines.append(f"{sec * 1e3:9.3f} {pct(sec):5.1f} "
                         f"{sum(g.calls for g in rest):5d}  ({len(rest)} more groups)")
        kinds = ", ".join(f"{k} {v * 1e3:.2f} ms ({pct(v):.1f}%)"
                          for k, v in self.by_kind().items())
        lines.append(f"by kind: {kinds}; outside the steps {self.outside * 1e3:.2f} ms "
                     f"({pct(self.outside):.1f}%)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def describe_ops(ops) -> str:
    """'matmul+add' from a sequence of op names: movement ops left out unless alone,
    repeats folded."""
    ops = list(ops)
    shown = [o for o in ops if o not in _QUIET_OPS] or [o for o in ops
                                                          if o not in ("input", "constant")]
    seen, out = set(), []
    for o in shown:
        if o not in seen:
            seen.add(o)
            out.append(o)
    return "+".join(out) or "copy"


def node_ops(node) -> str:
    """What a (fused) node computes, for a profile row."""
    body = node.attrs.get("body") if node.op == "fused" else None
    if body is None:
        return describe_ops([node.op])
    return describe_ops(b.op for b in body.nodes.values())


def build_profile(label, entries, timer: StepTimer, totals, repeat,
                  outside=()) -> Profile:
    """``entries``: (key, node, kind, shape) of every step in run order; steps the timer
    never saw (views of another buffer) are left out. ``outside``: per timed call, its
    seconds outside the steps."""
    steps = []
    for key, node, kind, shape in entries:
        times = timer.times.get(key)
        if not times:
            continue
        steps.append(StepTime(node.name, kind, node_ops(node), tuple(shape),
                              str(node.loc) if node.loc else "", float(np.median(times))))
    return Profile(label, steps, float(np.median(totals)), repeat,
                   float(np.median(outside)) if len(outside) else 0.0)
