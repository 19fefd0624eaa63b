"""The profile table's percentages add up: the groups plus "outside the steps" are 100% of
the call timed step by step (issue 18)."""
import re

from graphc.runtime.profile import Profile, StepTime


def _profile(step_ms, outside_ms, total_ms):
    steps = [StepTime(f"%{i}", "kernel", f"op{i}", (4,), "m.py:1", ms / 1e3)
             for i, ms in enumerate(step_ms)]
    return Profile("g on numba (S=4)", steps, total_ms / 1e3, 3, outside_ms / 1e3)


def _percentages(text):
    rows = text.splitlines()[2:-1]
    pct = [float(r.split()[1]) for r in rows]
    outside = float(re.search(r"outside the steps [\d.]+ ms \(([\d.]+)%\)", text).group(1))
    kinds = [float(x) for x in re.findall(r"kernel [\d.]+ ms \(([\d.]+)%\)", text)]
    return pct, outside, kinds


def test_groups_and_outside_add_up_to_100_percent():
    # step-by-step timing costs more than the plain call (1.2x): the old table gave 120%
    p = _profile([30, 50, 40], 0.0, 100)
    pct, outside, kinds = _percentages(p.table())
    assert abs(sum(pct) + outside - 100) < 0.3
    assert abs(kinds[0] + outside - 100) < 0.3
    p = _profile([30, 50, 10, 5, 1], 4.0, 100)
    text = p.table(top=2)                     # the rest folded into one row
    pct, outside, kinds = _percentages(text)
    assert len(pct) == 3 and abs(sum(pct) + outside - 100) < 0.3
    assert "outside the steps 4.00 ms (4.0%)" in text
    assert "100.00 ms a call" in text         # the plain call's time is still shown
