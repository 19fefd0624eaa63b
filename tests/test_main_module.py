"""``python -m graphc`` is the ``graphc`` command (for a checkout whose console script is
not on PATH)."""
import subprocess
import sys


def test_python_m_graphc_runs_the_cli():
    res = subprocess.run([sys.executable, "-m", "graphc", "ops"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert any(line.split()[:2] == ["softmax", "reduction"] for line in res.stdout.splitlines())
    bad = subprocess.run([sys.executable, "-m", "graphc", "show", "nosuchmodel"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
