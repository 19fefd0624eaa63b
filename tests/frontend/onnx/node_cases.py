"""ONNX's node test cases (onnx.backend.test.case.node) for the ops graphc translates,
run through graphc.onnx_backend and checked as ONNX's own runner checks them (shape,
dtype, allclose with the case's rtol / atol).

Collecting ONNX's cases takes ~50 s (every export runs); the selected cases are cached
in ``$GRAPHC_ONNX_CASES`` (default ``~/.cache/graphc/onnx-node-cases-<onnx version>.pkl``).
``python -m tests.frontend.onnx.node_cases [backend]`` prints the counts."""
from __future__ import annotations

import json
import os
import pickle
import sys
import warnings

import numpy as np

import graphc

# The ops of issue 15: a case counts when every node of its model is one of these.
OPS = frozenset("""Abs Add And ArgMax ArgMin Cast CastLike Ceil Clip Concat Constant
ConstantOfShape Cos CumSum Div Dropout Einsum Elu Equal Erf Exp Expand Flatten Floor Gather
GatherElements GatherND Gelu Gemm Greater GreaterOrEqual HardSigmoid HardSwish Identity
IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax MatMul Max Min Mish
Mul Neg Not Or Pow Range Reciprocal ReduceL2 ReduceMax ReduceMean ReduceMin ReduceSum
ReduceSumSquare Relu Reshape RMSNormalization RotaryEmbedding Selu Shape Sigmoid Sign Sin
Size Slice Softmax Softplus Split Sqrt Squeeze Sub Sum Swish Tanh TopK Transpose Trilu
Unsqueeze Where Xor Attention""".split())


def _cache_path() -> str:
    import onnx
    return os.environ.get("GRAPHC_ONNX_CASES") or os.path.join(
        os.path.expanduser("~"), ".cache", "graphc", f"onnx-node-cases-{onnx.__version__}.pkl")


def load_cases() -> list[dict]:
    """[{name, model (bytes), data [(inputs, outputs)], rtol, atol, ops, op}] for OPS:
    every node case of ONNX (collected in a subprocess, then cached)."""
    path = _cache_path()
    if not os.path.exists(path):
        import subprocess
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
        subprocess.run([sys.executable, "-m", "tests.frontend.onnx.node_cases", "--collect"],
                       cwd=root, check=True, env=dict(os.environ, GRAPHC_ONNX_CASES=path))
    with open(path, "rb") as f:
        return pickle.load(f)


def _collect_all() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            from onnx.backend.test.case.node import collect_testcases
            cases = collect_testcases()
    out = _select(cases)
    path = _cache_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + f".{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(out, f)
    os.replace(tmp, path)


_MODULE_CASES: dict = {}


# Ops graphc also translates, beyond the list (their cases: test_extra_ops).
EXTRA_OPS = frozenset("""Mod Round Pad Tile Mean PRelu Celu Softsign ThresholdedRelu ReduceL1
ReduceLogSum ReduceLogSumExp ReduceProd Conv InstanceNormalization GroupNormalization""".split())
EXTRA_MODULES = ("mod", "round", "pad", "tile", "mean", "prelu", "celu", "softsign",
                 "thresholdedrelu", "reducel1", "reduce_log_sum", "reduce_log_sum_exp",
                 "reduceprod", "conv", "instance_normalization", "groupnormalization")


def module_cases(*modules: str, ops=None) -> list[dict]:
    """The cases of a few of ONNX's case modules (``"add"``, ``"reshape"``: the files of
    onnx/backend/test/case/node), made by importing just those (fast)."""
    import importlib
    import onnx.backend.test.case.node as node_pkg
    out = []
    for m in modules:
        if m not in _MODULE_CASES:
            n0 = len(node_pkg._NodeTestCases)
            name = f"onnx.backend.test.case.node.{m}"
            if name in sys.modules:
                raise RuntimeError(f"{name} was imported before: its cases are mixed in")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with np.errstate(all="ignore"):
                    importlib.import_module(name)
            _MODULE_CASES[m] = node_pkg._NodeTestCases[n0:]
        out += _select(_MODULE_CASES[m], ops)
    return out


def _select(cases, ops=None) -> list[dict]:
    ops = OPS if ops is None else ops
    out = []
    for c in cases:
        types = sorted({n.op_type for n in c.model.graph.node})
        if not types or not set(types) <= ops or not c.data_sets:
            continue
        out.append({"name": c.name, "model": c.model.SerializeToString(),
                    "data": [(list(i), list(o)) for i, o in c.data_sets],
                    "rtol": c.rtol, "atol": c.atol, "ops": types,
                    "op": c.model.graph.node[0].op_type if len(c.model.graph.node) == 1
                    else _main_op(c.name, types)})
    return out


def _main_op(name: str, types) -> str:
    """The op a multi-node case tests (``test_layer_normalization_..._expanded``)."""
    flat = name.replace("_", "").lower()
    best = max((t for t in types if t.lower() in flat), key=len, default=types[0])
    return best


def compare(ref, out, rtol, atol):
    """ONNX's runner check; returns None or the failure text."""
    if len(ref) != len(out):
        return f"{len(out)} outputs, expected {len(ref)}"
    for k, (r, o) in enumerate(zip(ref, out)):
        r, o = np.asarray(r), np.asarray(o)
        if r.shape != o.shape:
            return f"output {k}: shape {o.shape}, expected {r.shape}"
        if r.dtype != o.dtype:
            return f"output {k}: dtype {o.dtype}, expected {r.dtype}"
        try:
            np.testing.assert_allclose(o, r, rtol=rtol, atol=atol)
        except AssertionError as e:
            return f"output {k}: " + str(e).strip().splitlines()[-1][:200]
    return None


def _arrays(values):
    from onnx import TensorProto, numpy_helper
    return [numpy_helper.to_array(v) if isinstance(v, TensorProto) else np.asarray(v)
            for v in values]


def run_case(case, backend="reference"):
    """("pass", None) | ("rejected", GraphcError text) | ("fail", why) | ("crash", why)."""
    import onnx
    import graphc.onnx_backend as gb
    model = onnx.load_from_string(case["model"])
    try:
        rep = gb.prepare(model, backend=backend)
        for inputs, outputs in case["data"]:
            inputs, outputs = _arrays(inputs), _arrays(outputs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with np.errstate(all="ignore"):
                    got = rep.run(inputs)
            why = compare(outputs, list(got), case["rtol"], case["atol"])
            if why is not None:
                return "fail", why
    except graphc.GraphcError as e:
        return "rejected", f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    except Exception as e:  # noqa: BLE001  a crash: graphc must raise a GraphcError
        return "crash", f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    return "pass", None


def ort_passes(case) -> bool:
    """Whether ONNX Runtime itself passes the case (the target counts only those)."""
    import onnxruntime as ort
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        sess = ort.InferenceSession(case["model"], so, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        for inputs, outputs in case["data"]:
            inputs, outputs = _arrays(inputs), _arrays(outputs)
            got = sess.run(None, dict(zip(names, inputs)))
            if compare(outputs, got, case["rtol"], case["atol"]) is not None:
                return False
    except Exception:  # noqa: BLE001
        return False
    return True


def sweep(backend="reference", names=None, verbose=False):
    cases = load_cases()
    if names is not None:
        cases = [c for c in cases if c["name"] in names]
    results = {}
    for c in cases:
        results[c["name"]] = run_case(c, backend)
        if verbose and results[c["name"]][0] != "pass":
            print(c["name"], *results[c["name"]], flush=True)
    return results


def spread(cases, ort_fails=()) -> list[dict]:
    """One case per op: the first that is not an _expanded graph and that ONNX Runtime
    passes."""
    seen = {}
    for c in cases:
        if c["name"] not in ort_fails and c["op"] not in seen and "expanded" not in c["name"]:
            seen[c["op"]] = c
    return [seen[k] for k in sorted(seen)]


if __name__ == "__main__":
    if sys.argv[1:] == ["--collect"]:
        _collect_all()
        sys.exit(0)
    if sys.argv[1:] == ["--ort"]:
        fails = sorted(c["name"] for c in load_cases() if not ort_passes(c))
        print(json.dumps(fails, indent=0))
        sys.exit(0)
    backend = sys.argv[1] if len(sys.argv) > 1 else "reference"
    res = sweep(backend, verbose=True)
    counts = {}
    for st, _ in res.values():
        counts[st] = counts.get(st, 0) + 1
    print(backend, counts, "of", len(res))
