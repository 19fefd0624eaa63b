"""The ``graphc`` command line.

    graphc show transformer [--dot FILE]        print the IR (or write Graphviz DOT)
    graphc show transformer --after fuse --svg g.svg   draw it (fused groups as clusters)
    graphc show transformer --after fuse        the IR after a pass of the O2 pipeline
    graphc show transformer --level O2 --explain --time --memory 128,1024
    graphc run transformer --backend numba      run on random tokens, check vs float64
    graphc compare transformer --backends reference,numba   agreement and time side by side
    graphc ops | graphc passes                  list the registered ops / passes and rules

An ONNX file in place of the model name (``graphc show model.onnx --explain``,
``graphc run model.onnx --shape input_ids=2,128``, ``graphc compare model.onnx``, with
ONNX Runtime as a peer where it is installed) imports it with ``graphc.from_onnx``; a
PyTorch target ``module:callable`` or ``file.py:callable`` (the callable returns
``(model, example_args[, dynamic_shapes])``) with ``graphc.from_torch``, eager torch its
peer (``graphc compare mymodels.py:make``). Both are an ``ImportedModel`` below: one path.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

import numpy as np

from .errors import GraphcError, InputError
from .timing import decode_rate, run_timed

MODELS = ("transformer", "deepseek-v2")


def is_imported(model: str) -> bool:
    """An ONNX file or a PyTorch target, not a built-in model."""
    return model not in MODELS


def _model_name(text: str) -> str:
    """A built-in model's name, the path of an ONNX file, or a PyTorch target."""
    from .frontend.torch.target import FORM, looks_like_target
    if text in MODELS:
        return text
    if text.lower().endswith(".py") and os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a Python file: name the callable "
                                         f"in it, {text}:CALLABLE ({FORM})")
    if text.lower().endswith(".onnx") or os.path.isfile(text):
        if not os.path.isfile(text):
            raise argparse.ArgumentTypeError(f"no such ONNX file {text!r}")
        return text
    if looks_like_target(text):
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from "
                                     f"{', '.join(MODELS)}, give a .onnx file, or a PyTorch "
                                     f"target {FORM})")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=_model_name, metavar="MODEL",
                   help=f"which model to build ({', '.join(MODELS)}), an ONNX file, or a "
                        "PyTorch target module:callable / file.py:callable returning "
                        "(model, example_args[, dynamic_shapes])")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=D,D,...",
                   help="ONNX / PyTorch: the shape of input NAME (repeatable); show pins it, "
                        "run and compare draw random inputs of it (a PyTorch target's "
                        "default inputs: its example_args)")
    p.add_argument("--layers", type=int, default=2, help="number of layers (default 2)")
    p.add_argument("--d-model", type=int, default=64, help="model width (default 64)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--d-ff", type=int, default=256, help="feed-forward width (default 256)")
    p.add_argument("--vocab", type=int, default=1000, help="vocabulary size (default 1000)")
    p.add_argument("--causal", action="store_true", help="causal attention mask")
    p.add_argument("--no-positions", action="store_true",
                   help="leave out the sinusoidal position encodings")
    p.add_argument("--seed", type=int, default=0, help="parameter seed (default 0)")
    p.add_argument("--layer-only", action="store_true",
                   help="one encoder layer (input x [S, d_model]) instead of the whole model")


def _build(args):
    if args.model == "deepseek-v2":
        return _build_deepseek(args)
    from graphc.models import transformer
    cfg = transformer.TransformerConfig(
        vocab_size=args.vocab, d_model=args.d_model, n_heads=args.heads, d_ff=args.d_ff,
        n_layers=args.layers, causal=args.causal, positional=not args.no_positions)
    return transformer.random(cfg, seed=args.seed)


def _trace(model, args, seq="S"):
    return model.trace_layer(0, seq) if args.layer_only else model.trace(seq)




def _fmt_bytes(n: int) -> str:
    from .runtime.memory import fmt_bytes
    return fmt_bytes(n)


# -- drawing a graph (show --dot / --svg / --png) -------------------------------------------

from .ir.printer import to_dot as graph_dot  # noqa: E402  (the one DOT writer)


DRAW_FORMATS = ("dot", "svg", "png")
INSTALL_DOT = ("Graphviz's 'dot' program is not installed (install it with: apt install "
               "graphviz; on macOS: brew install graphviz; with conda: conda install "
               "graphviz), or write DOT text with --dot FILE")


def write_drawing(dot_text: str, path: str, fmt: str) -> None:
    """DOT text into ``path``; svg / png rendered by Graphviz's ``dot``."""
    import shutil
    import subprocess
    if fmt == "dot":
        with open(path, "w") as f:
            f.write(dot_text)
        return
    exe = shutil.which("dot")
    if exe is None:
        raise _UsageError(f"--{fmt} {path}: {INSTALL_DOT}")
    r = subprocess.run([exe, f"-T{fmt}", "-o", path], input=dot_text.encode(),
                       capture_output=True, timeout=300)
    if r.returncode != 0:
        raise _UsageError(f"dot -T{fmt} failed on the graph: "
                          f"{r.stderr.decode(errors='replace').strip()[:500]}")


class _UsageError(Exception):
    """A mistake on the command line found after parsing: 'graphc: error: ...', exit 2."""


def _drawing_target(args):
    """(format, path) of --dot / --svg / --png, or None; one at most. DOT text is not
    written into a file named .svg or .png."""
    given = [(f, getattr(args, f)) for f in DRAW_FORMATS if getattr(args, f, None)]
    if not given:
        return None
    if len(given) > 1:
        raise _UsageError("give one of --dot, --svg, --png")
    fmt, path = given[0]
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if fmt == "dot" and suffix in ("svg", "png", "pdf", "jpg", "jpeg"):
        raise _UsageError(f"--dot writes Graphviz DOT text, not an image: use "
                          f"--{'svg' if suffix == 'svg' else 'png'} {path} to draw it, or "
                          f"--dot {path.rsplit('.', 1)[0]}.dot")
    return fmt, path


class _DrawAfter:
    """An instrument keeping the DOT text of the graph after the named passes."""

    def __init__(self, after):
        self.after = set(after)
        self.texts: dict[str, str] = {}

    def start(self, graph):
        pass

    def before_pass(self, name, graph):
        pass

    def after_pass(self, name, graph, events):
        if name in self.after:
            self.texts[name] = graph_dot(graph)

    def finish(self, graph):
        pass


def cmd_show(args) -> int:
    import io
    from .passes import DumpIR, Explain, PassManager, TimePasses, VerifyIR
    from .passes.manager import resolve_pipeline
    if is_imported(args.model):
        graph = imported(args).graph(pin=True)
    else:
        _no_shape(args)
        model = _build(args)
        graph = _trace(model, args, args.seq)
    after = [a for a in (args.after or "").split(",") if a]
    level = args.level or ("O2" if after or args.explain or args.memory or args.time
                           else "O0")
    pipeline = resolve_pipeline(level)
    missing = [a for a in after if a not in pipeline]
    if missing:
        print(f"graphc: error: {', '.join(missing)} not in the {level} pipeline "
              f"({', '.join(pipeline)})", file=sys.stderr)
        return 2
    target = _drawing_target(args)
    if target is not None and target[0] != "dot":
        import shutil
        if shutil.which("dot") is None:           # say so before the passes run
            raise _UsageError(f"--{target[0]} {target[1]}: {INSTALL_DOT}")
    dump = DumpIR(after=after, stream=io.StringIO())
    draw = _DrawAfter(after)
    timer, explain = TimePasses(), Explain()
    out = PassManager(pipeline, [VerifyIR(), dump, draw, timer, explain]).run(graph)
    if target is not None:
        fmt, path = target
        texts = [(a, draw.texts[a]) for a in after if a in draw.texts] if after \
            else [(None, graph_dot(out))]
        for name, text in texts:
            where = path
            if len(texts) > 1:                     # one file per pass: g.fuse.svg
                stem, dot_, ext = path.rpartition(".")
                where = f"{stem}.{name}.{ext}" if dot_ else f"{path}.{name}"
            write_drawing(text, where, fmt)
            what = f"the graph after {name}" if name else f"the {level} graph"
            hint = f"; render with: dot -Tsvg {where} -o graph.svg" if fmt == "dot" else ""
            print(f"wrote {where}: {what} ({fmt}){hint}")
    else:
        text = dump.stream.getvalue() if after else str(out)
        print(text.rstrip("\n"))
    if args.explain:
        print("\n# explain\n" + explain.report())
        print("\n# attention\n" + attention_summary(out, explain))
    if args.time:
        print("\n# pass times\n" + timer.report())
    if args.memory:
        from .passes.plan_memory import plan_memory_for
        print("\n# memory plan (intermediates; graph inputs, weights and outputs excluded)")
        print(f"{'sizes':>14s} {'naive':>12s} {'arena':>12s} {'lower bound':>12s} "
              f"{'arena/bound':>11s} {'naive/arena':>11s}")
        for size in args.memory:
            bindings = {s: size for t in out.input_types for s in t.symbols}
            plan = plan_memory_for(out, bindings)
            plan.check()
            label = ",".join(f"{k}={v}" for k, v in bindings.items()) or "static"
            print(f"{label:>14s} {_fmt_bytes(plan.naive_bytes):>12s} "
                  f"{_fmt_bytes(plan.arena_bytes):>12s} {_fmt_bytes(plan.lower_bound_bytes):>12s} "
                  f"{plan.arena_bytes / max(plan.lower_bound_bytes, 1):11.3f} "
                  f"{plan.naive_bytes / max(plan.arena_bytes, 1):11.2f}")
    return 0


ATTENTION_RULE = "softmax(scale(q @ k^T) [+ mask]) @ v => attention"
_NOT_A_CANDIDATE = re.compile(r"expected (softmax|where) at %\d+, found ")


def attention_summary(graph, explain) -> str:
    """How many attention ops the optimised graph has, how many softmaxes are left
    outside one, and why the attention rule did not fire at each matmul that reads a
    softmax (a matmul reading anything else is no attention candidate)."""
    ops: dict = {}

    def count(g):
        for n in g.nodes.values():
            if n.op == "fused" and "body" in n.attrs:
                count(n.attrs["body"])
            ops[n.op] = ops.get(n.op, 0) + 1
    count(graph)
    lines = [f"{ops.get('attention', 0)} fused attention op(s); {ops.get('softmax', 0)} "
             "softmax(es) left outside one"]
    seen = []
    for e in explain.missed(ATTENTION_RULE):
        if _NOT_A_CANDIDATE.match(e["reason"]):
            continue
        text = e["message"].split(" not at ", 1)[-1]
        if text not in seen:
            seen.append(text)
    if seen:
        lines.append("not fused (the attention rule at a matmul reading a softmax):")
        lines += [f"  {t}" for t in seen]
    return "\n".join(lines)


def cmd_passes(args) -> int:
    from .passes import PIPELINES, all_passes
    from .passes.patterns import all_rules
    print("passes: " + ", ".join(all_passes()))
    for level, names in PIPELINES.items():
        print(f"{level}: {' -> '.join(names) or '(none)'}")
    print("rewrite rules (fuse_patterns):")
    for r in all_rules():
        print(f"  {r.name}")
    return 0


def compile_for(graph, name: str):
    """(executable, label) for a backend name on the command line. ``cupy`` runs on the
    GPU when there is one, else on the CPU emulation of the same CUDA kernels, labelled
    "cupy-emu" (its times say nothing about a GPU); ``cupy-emu`` asks for emulation."""
    import graphc
    name = backend_name(name)
    return graphc.compile(graph, backend=name), name


def backend_name(name: str) -> str:
    """``cupy`` without a GPU becomes ``cupy-emu`` (said on stderr)."""
    if name == "cupy":
        from graphc.backends.cupy_gpu import gpu_available
        ok, why = gpu_available()
        if not ok:
            print(f"graphc: no GPU for cupy ({why}); running its CUDA kernels under "
                  "CPU emulation as cupy-emu", file=sys.stderr)
            return "cupy-emu"
    return name


# A call estimated at more than this many floating-point operations says on stderr what it
# is doing (a long silent wait looks like a hang): each call, and the float64 check.
PROGRESS_FLOPS = 2e10


def estimate_flops(graph, bindings) -> float:
    """Multiply-adds x 2 of the matmuls, GEMMs and attentions of ``graph`` (fused bodies
    included) at these sizes: enough to tell a second from an hour."""
    from .ir.dims import evaluate
    total = 0.0

    def size(t):
        n = 1.0
        for d in t.shape:
            n *= max(evaluate(d, bindings), 0)
        return n
    for node in graph.nodes.values():
        if node.op == "fused" and "body" in node.attrs:
            total += estimate_flops(node.attrs["body"], bindings)
            continue
        ins = [graph.nodes[i].type for i in node.inputs]
        if node.op in ("matmul", "gemm") and ins and ins[0].rank:
            total += 2 * size(node.type) * max(evaluate(ins[0].shape[-1], bindings), 0)
        elif node.op == "attention" and len(ins) >= 3:
            q, k = ins[0], ins[1]
            rows = size(q) / max(evaluate(q.shape[-1], bindings), 1)
            T = max(evaluate(k.shape[-2], bindings), 0)
            total += 2 * rows * T * (max(evaluate(q.shape[-1], bindings), 0)
                                     + max(evaluate(ins[2].shape[-1], bindings), 0))
    return total


def _say(text: str) -> None:
    print(f"graphc: {text}", file=sys.stderr, flush=True)


def timed_calls(fn, repeat: int, label: str, slow):
    """(output, first call s, median of the timed calls) like graphc.timing.run_timed; a
    ``slow`` call (its GFLOP, or True; False: quiet) says on stderr when each call starts
    and how long it took, and a first call over a minute is timed once more only."""
    if not slow:
        return run_timed(fn, repeat)
    _say(f"{label}: first call ({slow:.3g} GFLOP in its matmuls and attentions; "
         "progress on stderr) ..." if not isinstance(slow, bool) else
         f"{label}: first call (a large one: progress on stderr) ...")
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    n = max(1, repeat)
    if first > 60 and n > 1:
        n = 1
        _say(f"{label}: first call took {first:.1f} s; timing 1 more call, not {repeat}")
    else:
        _say(f"{label}: first call took {first:.1f} s")
    times = []
    for k in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        _say(f"{label}: timed call {k + 1}/{n} took {times[-1]:.1f} s")
    return out, first, float(np.median(times))


def float64_oracle(graph, bindings):
    """(the float64 reference executable, None) when a call at these sizes fits in
    memory, else (None, why it is skipped)."""
    import graphc
    from .runtime.memory import available_bytes, fmt_bytes
    oracle = graphc.compile(graph, backend="reference", float64=True)
    avail = available_bytes()
    if avail is None:
        return oracle, None
    need, node, _ = oracle.memory_need(bindings)
    if need <= avail:
        return oracle, None
    sizes = ", ".join(f"{k}={v}" for k, v in sorted(bindings.items()))
    big = f" (largest: {node.op} {node.type} at {node.loc})" if node is not None else ""
    return None, (f"skipped: the float64 reference would need about {fmt_bytes(need)} at "
                  f"{sizes}{big}, {fmt_bytes(avail)} available")


def rel_error(out, ref) -> float:
    return float(np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref))


def cmd_run(args) -> int:
    if is_imported(args.model):
        return cmd_run_imported(args)
    _no_shape(args)
    if args.model == "deepseek-v2":
        return cmd_run_deepseek(args)
    from .runtime.inputs import random_inputs
    name = resolve_backends(args.backend)[0]
    model = _build(args)
    graph = _trace(model, args)
    rng = np.random.default_rng(args.seed + 1)
    inputs, bindings = random_inputs(graph, rng, default_size=args.seq)
    flops = estimate_flops(graph, bindings)
    slow = max(flops / 1e9, 1e-9) if flops >= PROGRESS_FLOPS else False   # GFLOP
    oracle, skipped = float64_oracle(graph, bindings)
    if slow:
        _say(f"compiling for {name} ...")
    t0 = time.perf_counter()
    exe, label = compile_for(graph, name)
    t_compile = time.perf_counter() - t0
    out, t_first, t_median = timed_calls(lambda: exe(*inputs), args.repeat, label, slow)
    what = "encoder layer" if args.layer_only else f"{args.layers}-layer {args.model}"
    print(f"{what}: S={args.seq}, d_model={args.d_model}, heads={args.heads}, "
          f"backend={label}")
    print(f"input  {', '.join(f'{n} {a.dtype}{list(a.shape)}' for n, a in zip(graph.input_names, inputs))}")
    print(f"output {out.dtype}{list(out.shape)}")
    ok = True
    if oracle is None:
        print(f"relative error vs float64 reference: {skipped}")
    else:
        if slow:
            _say("float64 reference check ...")
        err = rel_error(out, oracle(*inputs))
        ok = err < args.tol
        print(f"relative error vs float64 reference: {err:.3e}  "
              f"({'ok' if ok else 'FAILED'}, tolerance {args.tol:g})")
    print(f"compile {t_compile * 1e3:.1f} ms, first call {t_first * 1e3:.2f} ms, then median "
          f"{t_median * 1e3:.2f} ms over {max(1, args.repeat)} runs")
    if args.profile:
        print("\n" + exe.profile(*inputs, repeat=args.repeat).table(args.profile))
    return 0 if ok else 1


def resolve_backends(text: str) -> list[str]:
    """The backends of --backend(s), checked before anything runs (an unknown name is an
    error naming the known ones); ``cupy`` without a GPU becomes ``cupy-emu``, said on
    stderr now, before any table."""
    from .runtime.backends import get_backend
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise _UsageError(f"no backend in {text!r}")
    for n in names:
        get_backend(n)                            # BackendError: unknown backend 'foo'
    return [backend_name(n) for n in names]


def cmd_compare(args) -> int:
    if is_imported(args.model):
        return cmd_compare_imported(args)
    _no_shape(args)
    if args.model == "deepseek-v2":
        return cmd_compare_deepseek(args)
    from .runtime.inputs import random_inputs
    names = resolve_backends(args.backends)
    model = _build(args)
    graph = _trace(model, args)
    rng = np.random.default_rng(args.seed + 1)
    inputs, bindings = random_inputs(graph, rng, default_size=args.seq)
    flops = estimate_flops(graph, bindings)
    slow = max(flops / 1e9, 1e-9) if flops >= PROGRESS_FLOPS else False   # GFLOP
    oracle, skipped = float64_oracle(graph, bindings)
    if oracle is not None and slow:
        _say("float64 reference ...")
    ref = oracle(*inputs) if oracle is not None else None
    rows, failed, refused = [], False, []
    for name in names:
        if slow:
            _say(f"compiling for {name} ...")
        t0 = time.perf_counter()
        exe, label = compile_for(graph, name)
        t_compile = time.perf_counter() - t0
        try:
            out, _, t_median = timed_calls(lambda: exe(*inputs), args.repeat, label, slow)
        except InputError as e:
            if "this call needs about" not in e.message:
                raise
            # too large for this backend (the reference's whole score matrices): a row
            # saying so, the other backends still run
            rows.append((label, float("nan"), float("nan"), t_compile))
            refused.append(f"{label}: {e.message.split('; use smaller')[0]}")
            failed = True
            continue
        err = rel_error(out, ref) if ref is not None else float("nan")
        failed |= ref is not None and not err < args.tol
        rows.append((label, err, t_median, t_compile))
    what = "encoder layer" if args.layer_only else f"{args.layers}-layer {args.model}"
    print(f"{what}: S={args.seq}, d_model={args.d_model}, heads={args.heads}, "
          f"d_ff={args.d_ff}; relative error against the float64 reference; "
          f"median of {args.repeat} runs after a warm-up")
    if skipped:
        print(f"relative error vs float64 reference: {skipped}")
    print(f"{'backend':12s} {'rel. error':>11s} {'median ms':>10s} {'compile s':>10s} "
          f"{'speed-up':>9s}")
    base = next((r[2] for r in rows if r[2] == r[2]), float("nan"))
    for name, err, med, tc in rows:
        err_text = f"{err:11.2e}" if err == err else f"{'-':>11s}"
        if med != med:
            print(f"{name:12s} {err_text} {'-':>10s} {tc:10.2f} {'-':>9s}  REFUSED "
                  "(too large, below)")
            continue
        print(f"{name:12s} {err_text} {med * 1e3:10.2f} {tc:10.2f} {base / med:8.2f}x"
              + ("" if err != err or err < args.tol else "  FAILED")
              + ("  (CPU emulation of the GPU kernels: not a GPU time)"
                 if name == "cupy-emu" else ""))
    for text in refused:
        print(f"refused {text}")
    return 1 if failed else 0


# -- imported models: ONNX files and PyTorch targets ---------------------------------------

def _no_shape(args) -> None:
    if getattr(args, "shape", None) or getattr(args, "inputs", None):
        raise _UsageError("--shape and --inputs are for ONNX files and PyTorch targets; "
                          "the built-in models take --seq")


def _parse_shapes(args) -> dict:
    out = {}
    for text in args.shape:
        name, eq, dims = text.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
        except ValueError:
            shape = None
        if not eq or not name or shape is None or any(d < 0 for d in shape):
            raise _UsageError(f"--shape {text!r}: expected NAME=D,D,... (an input's name "
                              "and its dims, e.g. input_ids=2,128)")
        out[name] = shape
    return out


def _input_listing(graph) -> str:
    return ", ".join(f"{n} {t}" for n, t in zip(graph.input_names, graph.input_types))


def shape_bindings(graph, shapes: dict) -> dict:
    """The symbol sizes the shapes of named inputs give (``{"batch": 2, "seq": 128}``);
    an unknown input, a wrong rank, a fixed dim given another size or one symbol given two
    sizes is a usage error naming the model's inputs."""
    bindings: dict = {}
    for name, shape in shapes.items():
        if name not in graph.input_names:
            raise _UsageError(f"{name!r} is not an input of the model; its inputs: "
                              f"{_input_listing(graph)}")
        t = graph.input_types[graph.input_names.index(name)]
        if len(shape) != t.rank:
            raise _UsageError(f"{name} has {t.rank} dims ({t}), got {len(shape)}: "
                              f"{list(shape)}")
        for d, v in zip(t.shape, shape):
            if isinstance(d, int):
                if d != v:
                    raise _UsageError(f"{name} is {t}: a dim of {d} cannot be {v}")
                continue
            key = str(d)
            if key in bindings and bindings[key] != v:
                raise _UsageError(f"{name}: {key} is {bindings[key]} from another input, "
                                  f"not {v}")
            bindings[key] = v
    return bindings


class ImportedModel:
    """A model graphc imports rather than builds: its Graph, the inputs a run draws and
    the peer runtime that runs the source itself (ONNX Runtime, eager torch). ``show``,
    ``run`` and ``compare`` go through this one interface for every kind."""
    peer = "peer"
    peer_missing = ""

    def __init__(self, args):
        self.args = args
        self.label = args.model
        self._graph = None

    def graph(self, pin: bool = False):
        """The Graph (symbolic dims), or with ``pin`` its dims fixed by --shape."""
        if self._graph is None:
            self._graph = self.import_graph(None)
        bindings = shape_bindings(self._graph, _parse_shapes(self.args))
        if pin and bindings:
            return self.import_graph(bindings)
        return self._graph

    def inputs(self, graph, rng):
        return model_inputs(graph, self.args, rng)

    def peer_call(self, arrays):
        """A call running the model in its own runtime on ``arrays``, or None when the
        runtime is not installed (``peer_missing`` says how to get it)."""
        return None


class OnnxModel(ImportedModel):
    peer = "onnxruntime"
    peer_missing = "onnxruntime is not installed: no ONNX Runtime peer (pip install onnxruntime)"

    def __init__(self, args):
        super().__init__(args)
        self.label = os.path.basename(args.model)

    def import_graph(self, bindings):
        import graphc
        return graphc.from_onnx(self.args.model, dims=bindings)

    def peer_call(self, arrays):
        sess = ort_session(self.args.model)
        return None if sess is None else _ort_call(sess, arrays)


class TorchModel(ImportedModel):
    """``module:callable`` / ``file.py:callable`` (graphc/frontend/torch/target.py):
    imported with graphc.from_torch; its example_args are the default inputs; eager torch
    (the module itself, under no_grad) is the peer."""
    peer = "torch"

    def __init__(self, args):
        from .frontend.torch.target import load_target
        super().__init__(args)
        self.target = load_target(args.model)

    def import_graph(self, bindings):
        import graphc
        t = self.target
        if not bindings:
            return graphc.from_torch(t.model, t.args, t.dynamic_shapes, t.kwargs or None)
        # pinned sizes: export again, statically, on example inputs of those sizes
        from .frontend.torch.target import with_tensors
        import torch
        arrays, _ = self.inputs(self._graph, np.random.default_rng(0))
        args, kwargs = with_tensors(t, [torch.from_numpy(a) for a in arrays])
        return graphc.from_torch(t.model, args, None, kwargs or None)

    def inputs(self, graph, rng):
        if self.args.shape or getattr(self.args, "inputs", None):
            return model_inputs(graph, self.args, rng)
        from .frontend.torch.target import tensor_leaves
        from .frontend.torch.importer import tensor_array
        arrays = [np.ascontiguousarray(tensor_array(a, f"example input {k}"))
                  for k, a in enumerate(tensor_leaves(self.target))]
        if len(arrays) != len(graph.input_names):
            raise _UsageError(f"{self.label}: the example_args hold {len(arrays)} tensors but "
                              f"the exported graph has {len(graph.input_names)} inputs "
                              f"({_input_listing(graph)})")
        return arrays, shape_bindings(graph, {n: a.shape for n, a in
                                              zip(graph.input_names, arrays)})

    def peer_call(self, arrays):
        from .frontend.torch.target import eager_call
        return eager_call(self.target, arrays)


def imported(args) -> ImportedModel:
    """The ImportedModel of MODEL, made once per command (a PyTorch target is imported and
    exported once)."""
    if getattr(args, "_imported", None) is None:
        from .frontend.torch.target import looks_like_target
        onnx = args.model.lower().endswith(".onnx") or os.path.isfile(args.model)
        args._imported = OnnxModel(args) if onnx or not looks_like_target(args.model) \
            else TorchModel(args)
    return args._imported


def _default_size(sym: str, seq: int) -> int:
    return 1 if "batch" in sym.lower() else seq


def model_inputs(graph, args, rng):
    """(arrays, bindings): from --inputs FILE.npz (keyed by input name, or arr_0, arr_1 ...
    in input order), else random ones of the --shape sizes (unnamed: batch 1, the rest
    --seq). Random ints index their tables in range (input_ids < the vocabulary); an int
    input indexing nothing is 0 / 1, a 2-D one named *mask* right-padded (row 0 full)."""
    from .runtime.inputs import random_inputs
    names = graph.input_names
    if getattr(args, "inputs", None):
        try:
            data = np.load(args.inputs)
        except (OSError, ValueError) as e:
            raise _UsageError(f"--inputs {args.inputs}: cannot read it: {e}") from None
        arrays = []
        for k, name in enumerate(names):
            key = name if name in data else f"arr_{k}"
            if key not in data:
                raise _UsageError(f"--inputs {args.inputs} has no array {name!r} (it has "
                                  f"{', '.join(data.files) or 'none'}); the model's inputs: "
                                  f"{_input_listing(graph)}")
            arrays.append(np.asarray(data[key]))
        bindings = shape_bindings(graph, {n: a.shape for n, a in zip(names, arrays)})
        return arrays, bindings
    bindings = shape_bindings(graph, _parse_shapes(args))
    for t in graph.input_types:
        for sym in t.symbols:
            bindings.setdefault(sym, _default_size(sym, args.seq))
    arrays, bindings = random_inputs(graph, rng, bindings)
    for k, (name, a) in enumerate(zip(names, arrays)):
        if a.dtype.kind == "i" and a.ndim == 2 and "mask" in name.lower() \
                and a.max(initial=0) <= 1:
            n = a.shape[1]
            lens = [n] + [int(x) for x in rng.integers(1, n + 1, a.shape[0] - 1)]
            arrays[k] = (np.arange(n)[None] < np.array(lens)[:, None]).astype(a.dtype)
    return arrays, bindings


def _as_tuple(out):
    return out if isinstance(out, (tuple, list)) else (out,)


def outputs_error(outs, refs) -> float:
    """The largest relative error over the outputs (an int / bool output: 0 when equal,
    else 1)."""
    worst = 0.0
    for o, r in zip(_as_tuple(outs), _as_tuple(refs)):
        o, r = np.asarray(o), np.asarray(r)
        if o.shape != r.shape:
            return float("inf")
        if r.dtype.kind in "biu":
            worst = max(worst, 0.0 if np.array_equal(o, r) else 1.0)
        elif r.size:
            worst = max(worst, rel_error(o, r.astype(np.float64)))
    return worst


def ort_session(path):
    """An ONNX Runtime session on the CPU, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _ort_call(sess, arrays):
    feeds = {i.name: a for i, a in zip(sess.get_inputs(), arrays)}
    return lambda: tuple(sess.run(None, feeds))


def _sizes_text(bindings) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(bindings.items())) or "static"


def cmd_run_imported(args) -> int:
    name = resolve_backends(args.backend)[0]
    source = imported(args)
    graph = source.graph()
    rng = np.random.default_rng(args.seed + 1)
    inputs, bindings = source.inputs(graph, rng)
    oracle, skipped = float64_oracle(graph, bindings)
    t0 = time.perf_counter()
    exe, label = compile_for(graph, name)
    t_compile = time.perf_counter() - t0
    out, t_first, t_median = timed_calls(lambda: exe(*inputs), args.repeat, label, False)
    print(f"{source.label}: {_sizes_text(bindings)}, backend={label}")
    print(f"input  {', '.join(f'{n} {a.dtype}{list(a.shape)}' for n, a in zip(graph.input_names, inputs))}")
    print(f"output {', '.join(f'{o.dtype}{list(o.shape)}' for o in map(np.asarray, _as_tuple(out)))}")
    ok = True
    if oracle is None:
        print(f"relative error vs float64 reference: {skipped}")
    else:
        err = outputs_error(out, oracle(*inputs))
        ok = err < args.tol
        print(f"relative error vs float64 reference: {err:.3e}  "
              f"({'ok' if ok else 'FAILED'}, tolerance {args.tol:g})")
    print(f"compile {t_compile * 1e3:.1f} ms, first call {t_first * 1e3:.2f} ms, then median "
          f"{t_median * 1e3:.2f} ms over {max(1, args.repeat)} runs")
    if args.profile:
        print("\n" + exe.profile(*inputs, repeat=args.repeat).table(args.profile))
    return 0 if ok else 1


PEER_NAMES = {"onnxruntime": "onnxruntime", "ort": "onnxruntime", "torch": "torch",
              "eager": "torch"}


def cmd_compare_imported(args) -> int:
    source = imported(args)
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    peers = {PEER_NAMES[n] for n in names if n in PEER_NAMES}
    if peers - {source.peer}:
        raise _UsageError(f"{', '.join(sorted(peers - {source.peer}))} is not the peer of "
                          f"{source.label} (its peer: {source.peer})")
    want_peer = bool(peers)
    names = resolve_backends(",".join(n for n in names if n not in PEER_NAMES))
    graph = source.graph()
    rng = np.random.default_rng(args.seed + 1)
    inputs, bindings = source.inputs(graph, rng)
    oracle, skipped = float64_oracle(graph, bindings)
    ref = oracle(*inputs) if oracle is not None else None
    rows, failed = [], False
    for name in names:
        t0 = time.perf_counter()
        exe, label = compile_for(graph, name)
        t_compile = time.perf_counter() - t0
        out, _, t_median = timed_calls(lambda: exe(*inputs), args.repeat, label, False)
        err = outputs_error(out, ref) if ref is not None else float("nan")
        failed |= ref is not None and not err < args.tol
        rows.append((label, err, t_median, t_compile))
    t0 = time.perf_counter()
    call = source.peer_call(inputs)
    note = None
    if call is None:
        note = source.peer_missing
        if want_peer:
            print(f"graphc: error: {note}", file=sys.stderr)
            return 2
    else:
        t_session = time.perf_counter() - t0     # the peer's setup (ONNX Runtime's session)
        out, _, t_median = timed_calls(call, args.repeat, source.peer, False)
        err = outputs_error(out, ref) if ref is not None else float("nan")
        failed |= ref is not None and not err < args.tol
        rows.append((source.peer, err, t_median, t_session))
    print(f"{source.label}: {_sizes_text(bindings)}; relative error against "
          f"graphc's float64 reference; median of {args.repeat} runs after a warm-up")
    if skipped:
        print(f"relative error vs float64 reference: {skipped}")
    if note:
        print(note)
    peer_med = next((r[2] for r in rows if r[0] == source.peer), None)
    vs_label = {"onnxruntime": "vs ORT", "torch": "vs torch"}.get(source.peer, "vs peer")
    print(f"{'backend':12s} {'rel. error':>11s} {'median ms':>10s} {'compile s':>10s} "
          f"{'speed-up':>9s}" + (f" {vs_label:>8s}" if peer_med else ""))
    base = rows[0][2] if rows else float("nan")
    for name, err, med, tc in rows:
        err_text = f"{err:11.2e}" if err == err else f"{'-':>11s}"
        vs = f" {peer_med / med:7.2f}x" if peer_med else ""
        print(f"{name:12s} {err_text} {med * 1e3:10.2f} {tc:10.2f} {base / med:8.2f}x{vs}"
              + ("" if err != err or err < args.tol else "  FAILED")
              + ("  (CPU emulation of the GPU kernels: not a GPU time)"
                 if name == "cupy-emu" else ""))
    return 1 if failed else 0


# -- DeepSeek-V2 ---------------------------------------------------------------------------

def _add_deepseek_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("deepseek-v2")
    from graphc.models.deepseek_v2 import PRESETS      # the one list of presets
    g.add_argument("--config", default="mini", choices=tuple(PRESETS),
                   help=f"deepseek-v2 preset for a random model: {', '.join(PRESETS)} "
                        "(default mini)")
    g.add_argument("--checkpoint", metavar="DIR",
                   help="deepseek-v2: Hugging Face checkpoint dir (config.json + safetensors)")
    g.add_argument("--prompt-ids", default="1,2,3", help="deepseek-v2: prompt token ids")
    g.add_argument("--max-new-tokens", type=int, default=16,
                   help="deepseek-v2: tokens to generate greedily (default 16)")


def _build_deepseek(args):
    from graphc.models import deepseek_v2
    if args.checkpoint:
        return deepseek_v2.load(args.checkpoint)
    return deepseek_v2.random(deepseek_v2.preset(args.config), seed=args.seed)


def _prompt(args, model) -> np.ndarray:
    try:
        ids = np.array([int(t) for t in args.prompt_ids.split(",") if t.strip()], np.int64)
    except ValueError:
        raise SystemExit(f"graphc: error: --prompt-ids must be comma-separated integers, "
                         f"got {args.prompt_ids!r}")
    return ids


def _deepseek_run(model, prompt, args, backend):
    """(new ids, forward logits, forward s, prefill s, decode tokens/s, compile s) on one
    backend; times are medians of --repeat calls after a first one. Prefill is generate's
    first step (the prompt's cache and next-token logits); the decode rate leaves it out:
    (n new tokens) - (1 new token) over n - 1 tokens (NaN when n < 2)."""
    t0 = time.perf_counter()
    model.compile(backend)                   # forward, prefill and decode in one batch
    t_compile = time.perf_counter() - t0
    logits, _, t_forward = run_timed(lambda: model.forward(prompt, backend=backend),
                                      args.repeat)
    _, _, t_prefill = run_timed(lambda: model.generate(prompt, 1, backend=backend),
                                 args.repeat)
    n = args.max_new_tokens
    out = model.generate(prompt, n, backend=backend)
    rate = decode_rate(lambda k: model.generate(prompt, k, backend=backend), n - 1,
                       args.repeat)
    return out, logits, t_forward, t_prefill, rate, t_compile


def _rate_text(rate: float) -> str:
    return f"{rate:.1f}" if rate == rate else "-"


def cmd_run_deepseek(args) -> int:
    model = _build_deepseek(args)
    prompt = _prompt(args, model)
    c = model.config
    src = args.checkpoint or f"random '{args.config}' preset (seed {args.seed})"
    name = resolve_backends(args.backend)[0]
    print(f"deepseek-v2 from {src}: {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
          f"{model.num_params():,} parameters, backend={name}")
    out, logits, t_fwd, t_pre, rate, t_compile = _deepseek_run(model, prompt, args, name)
    ref = model.forward(prompt, backend="reference", float64=True)
    err = float(np.linalg.norm(logits - ref) / np.linalg.norm(ref))
    cb = model.cache_bytes_per_token()
    print(f"prompt    {prompt.tolist()}")
    print(f"generated {out[len(prompt):].tolist()}")
    print(f"prompt logits vs float64 reference: relative error {err:.3e} "
          f"({'ok' if err < args.tol else 'FAILED'}, tolerance {args.tol:g})")
    print(f"compile {t_compile:.2f} s, forward (all logits) {t_fwd * 1e3:.1f} ms, prefill "
          f"(first token) {t_pre * 1e3:.1f} ms, decode {_rate_text(rate)} tokens/s "
          f"(medians of {max(1, args.repeat)} runs)")
    print(f"cache per token: {cb['mla']} B (c_kv + k_pe) vs {cb['mha']} B for standard "
          f"multi-head attention ({cb['ratio']:.1f}x smaller)")
    if args.profile:
        exe = model.compiled("forward", name)
        print("\nforward on the prompt, " + exe.profile(prompt, repeat=args.repeat)
              .table(args.profile))
        step = model.compiled("decode", name)
        print("\none decode step after the prompt, "
              + step.profile(*model.decode_inputs(prompt, name), repeat=args.repeat)
              .table(args.profile))
    return 0 if err < args.tol else 1


def cmd_compare_deepseek(args) -> int:
    names = resolve_backends(args.backends)
    model = _build_deepseek(args)
    prompt = _prompt(args, model)
    ref = model.forward(prompt, backend="reference", float64=True)
    print(f"deepseek-v2 ({args.checkpoint or args.config}): prompt of {len(prompt)} tokens, "
          f"{args.max_new_tokens} new; relative error of the prompt logits vs float64")
    print(f"{'backend':12s} {'rel. error':>11s} {'forward ms':>11s} {'prefill ms':>11s} "
          f"{'decode tok/s':>13s} {'compile s':>10s}  tokens")
    failed, first = False, None
    for name in names:
        out, logits, t_fwd, t_pre, rate, tc = _deepseek_run(model, prompt, args, name)
        err = float(np.linalg.norm(logits - ref) / np.linalg.norm(ref))
        same = first is None or np.array_equal(out, first)
        first = out if first is None else first
        bad = not err < args.tol or not same
        failed |= bad
        print(f"{name:12s} {err:11.2e} {t_fwd * 1e3:11.1f} {t_pre * 1e3:11.1f} {_rate_text(rate):>13s} "
              f"{tc:10.2f}  "
              f"{'same' if same else 'DIFFERENT'}" + ("  FAILED" if bad else ""))
    return 1 if failed else 0


def cmd_ops(args) -> int:
    from .ops import all_ops
    for name, op in sorted(all_ops().items()):
        first = op.doc.splitlines()[0] if op.doc else ""
        print(f"{name:14s} {op.kind:12s} {first}")
    return 0


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def _sizes(text: str) -> list[int]:
    """--memory N[,N]: whole numbers >= 1."""
    out = []
    for part in text.split(","):
        try:
            n = int(part)
        except ValueError:
            n = 0
        if n < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated whole numbers >= 1 (e.g. 128,1024), got {text!r}")
        out.append(n)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphc", description="graphc: compile Transformer "
                                     "models written in Python")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("show", help="print a model's IR")
    _add_model_args(p)
    _add_deepseek_args(p)
    p.add_argument("--seq", default="S", help="sequence length: a symbol (default S) or int")
    p.add_argument("--dot", metavar="FILE", help="write Graphviz DOT text to FILE instead "
                   "(fused groups as clusters)")
    p.add_argument("--svg", metavar="FILE", help="draw the graph into an SVG FILE (needs "
                   "Graphviz's dot: apt install graphviz)")
    p.add_argument("--png", metavar="FILE", help="draw the graph into a PNG FILE (needs "
                   "Graphviz's dot: apt install graphviz)")
    p.add_argument("--level", choices=("O0", "O1", "O2"),
                   help="optimisation level (default O0, or O2 with --after/--explain/"
                        "--time/--memory)")
    p.add_argument("--after", metavar="PASS[,PASS]",
                   help="print the IR after these passes of the pipeline (e.g. fuse)")
    p.add_argument("--explain", action="store_true",
                   help="which rewrite rules fired where, which did not and why, and the "
                        "fusion groups formed")
    p.add_argument("--time", action="store_true", help="time every pass")
    p.add_argument("--memory", metavar="N[,N]", type=_sizes,
                   help="memory plan (naive, arena, lower bound) with symbols bound to N")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("run", help="run a model on random tokens and check it")
    _add_model_args(p)
    _add_deepseek_args(p)
    p.add_argument("--seq", type=int, default=32, help="sequence length (default 32)")
    p.add_argument("--backend", default="reference", help="backend (default reference)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="max relative error vs float64 (default 1e-4)")
    p.add_argument("--inputs", metavar="FILE.npz",
                   help="ONNX / PyTorch: the input arrays (keyed by input name) instead of "
                        "random ones")
    p.add_argument("--profile", type=_positive, nargs="?", const=20, default=0, metavar="N",
                   help="print where a call spends its time: the N (default 20) costliest "
                        "groups of steps (deepseek-v2: the forward on the prompt and one "
                        "decode step)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("compare", help="run a model on several backends: agreement with "
                                       "float64 and time, side by side")
    _add_model_args(p)
    _add_deepseek_args(p)
    p.add_argument("--seq", type=int, default=128, help="sequence length (default 128)")
    p.add_argument("--backends", default="reference,numba",
                   help="comma-separated backends (default reference,numba); for an ONNX "
                        "file ONNX Runtime runs as a peer too where it is installed, for a "
                        "PyTorch target eager torch (name onnxruntime / torch to require it)")
    p.add_argument("--inputs", metavar="FILE.npz",
                   help="ONNX / PyTorch: the input arrays (keyed by input name) instead of "
                        "random ones")
    p.add_argument("--repeat", type=int, default=5, help="timed runs (default 5)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="max relative error vs float64 (default 1e-4)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("ops", help="list registered ops")
    p.set_defaults(func=cmd_ops)
    p = sub.add_parser("passes", help="list passes, pipelines and rewrite rules")
    p.set_defaults(func=cmd_passes)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "seq", None) is not None and isinstance(args.seq, str) \
            and args.seq.isdigit():
        args.seq = int(args.seq)
    try:
        return args.func(args)
    except (GraphcError, _UsageError) as e:
        print(f"graphc: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
