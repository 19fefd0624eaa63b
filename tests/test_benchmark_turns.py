"""benchmarks/turns.py, the protocol the benchmarks' peers share: worker processes kept
up, asked in turn for timed calls of each size; the first call of a size checked; a
peer that fails mid-run closed with its error, the others going on."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import turns  # noqa: E402

WORKER = """
import sys, time
sys.path.insert(0, {bench!r})
import turns
calls = []
def prepare(key):
    if key == "bad" and {fail!r}:
        raise ValueError("no such size: " + key)
    def run():
        calls.append(key)
        time.sleep(0.001)
        return len(calls)
    return run, lambda out: {{"first": out, "key": key}}
turns.serve({{"name": {name!r}}}, prepare)
"""


def spec(name, fail=False):
    code = WORKER.format(bench=str(ROOT / "benchmarks"), name=name, fail=fail)
    return name, [sys.executable, "-c", code], None


def test_peers_take_turns_and_check_the_first_call():
    peers, errors = turns.start([spec("a"), spec("b")])
    assert errors == [] and [p.info["name"] for p in peers] == ["a", "b"]
    turns.take_turns(peers, ["1x8", "2x4"], repeat=5, rounds=2, pause=0)
    for p in peers:
        assert p.error is None
        # 2 rounds of ceil(5 / 2) = 3 calls per size, after one warm-up call per size
        assert {k: len(v) for k, v in p.times.items()} == {"1x8": 6, "2x4": 6}
        assert all(t > 0.5 for v in p.times.values() for t in v)       # ms, >= 1 ms sleep
        assert p.checks == {"1x8": {"first": 1, "key": "1x8"},
                            "2x4": {"first": 5, "key": "2x4"}}
        assert p.proc.poll() is not None                    # closed at the end


def test_a_failing_peer_is_dropped_with_its_error():
    peers, errors = turns.start([spec("good"), spec("broken", fail=True)])
    turns.take_turns(peers, ["bad"], repeat=2, rounds=2, pause=0)
    good, broken = peers
    assert good.error is None and len(good.times["bad"]) == 2
    assert broken.error is not None and "no such size: bad" in broken.error
    assert "bad" not in broken.times


def test_a_peer_that_cannot_start_is_an_error():
    peers, errors = turns.start([("gone", [sys.executable, "-c", "raise SystemExit('x')"],
                                  None)])
    assert peers == [] and len(errors) == 1 and errors[0].startswith("gone failed")
