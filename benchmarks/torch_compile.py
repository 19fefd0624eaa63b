"""torch.compile(backend="graphc") vs eager torch vs torch.compile(backend="inductor") on
this CPU: a GPT-2-small-shaped and a Llama-shaped model (random weights, 4 layers, hidden
768, S=512, batch 1), each peer in its own subprocess (no peer warms another's caches),
kept up for the whole run while the peers take turns over several rounds
(benchmarks/turns.py: a slow spell of the machine falls on all of them alike), median of
the timed calls, ratios printed, plus the BLAS each peer's process runs. graphc's and
inductor's first calls are cold (empty GRAPHC_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR per
process) and made before the turns, one peer at a time; "graphs compiled a -> b" counts
the graphs the backend compiled by the first call and after the new length (a == b: no
recompile).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/torch_compile.py
    ... python benchmarks/torch_compile.py --omp-default   without GOMP_SPINCOUNT=10000
    ... python benchmarks/torch_compile.py --profile gpt2   where graphc's call spends its
                                                              time (exe.profile of each graph)
    ... python benchmarks/torch_compile.py --repeat 10 --rounds 5 --families llama
"""
import os
import tempfile
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import turns  # noqa: E402  (benchmarks/turns.py: the peers' shared protocol)

PEERS = ["eager", "inductor", "graphc"]
# `import torch` starts torch's GNU OpenMP (torch/lib/libgomp.so.1), which Numba's omp
# layer then shares; it reads GOMP_SPINCOUNT once, at that import, before graphc's numba
# backend can set it (backends/numba_cpu/__init__.py), so its workers would spin ~300k
# iterations after every kernel and the next GEMM waits for the cores. Every peer gets the
# same value at process start (--omp-default: none, to see the difference; docs/torch.md).
OPENMP_ENV = {} if "--omp-default" in sys.argv or "OMP_WAIT_POLICY" in os.environ or \
    "GOMP_SPINCOUNT" in os.environ else {"GOMP_SPINCOUNT": "10000"}
FAMILIES = ["gpt2", "llama"]
REPEAT, ROUNDS = 10, 5       # timed calls per peer, spread over this many rounds


def blas():
    """This process's BLAS and kernel in one line (each peer runs in its own process)."""
    from graphc.timing import blas_summary
    return blas_summary()


def model(family):
    import torch
    import transformers
    torch.manual_seed(0)
    common = dict(vocab_size=32000, attn_implementation="sdpa")
    if family == "gpt2":
        cfg = transformers.GPT2Config(n_embd=768, n_layer=4, n_head=12, n_positions=1024,
                                      **common)
        m = transformers.GPT2Model(cfg)
    else:
        cfg = transformers.LlamaConfig(hidden_size=768, num_hidden_layers=4,
                                       num_attention_heads=12, num_key_value_heads=4,
                                       intermediate_size=2048, **common)
        m = transformers.LlamaModel(cfg)
    return m.eval()


def child(peer, family, S=512):
    """A peer's process: build the model, make the cold first call (S) and one at a new
    length (S/2), then serve timed calls of a length (turns.serve)."""
    import torch
    import graphc  # noqa: F401  (registers nothing; the entry point names "graphc")
    m = model(family)
    phases = time_phases() if peer == "graphc" else {}

    def fwd(ids):
        return m(input_ids=ids, use_cache=False).last_hidden_state
    run = fwd if peer == "eager" else torch.compile(fwd, backend=peer, dynamic=True)
    ids = torch.randint(0, 32000, (1, S))
    with torch.no_grad():
        t0 = time.perf_counter()
        run(ids)
        first = time.perf_counter() - t0
        compiles_first = compiled_graphs(peer)
        t0 = time.perf_counter()
        run(torch.randint(0, 32000, (1, S // 2)))        # a new length: no recompile wanted
        new_len = time.perf_counter() - t0
        compiles_new_len = compiled_graphs(peer)
    info = {"first": first, "new_len": new_len, "compiles": [compiles_first, compiles_new_len],
            "phases": phases, "blas": blas()}

    def prepare(key):
        x = torch.randint(0, 32000, (1, int(key)))

        def call():
            with torch.no_grad():
                return run(x)
        return call, (lambda out: {})
    turns.serve(info, prepare)


def time_phases():
    """Seconds of graphc's first compile by phase, filled as it runs: translate (ATen FX ->
    Graph), passes (the O2 pipeline), build (lowering, rendering and Numba's compile) and
    the rest of the first call (dynamo's trace, AOTAutograd, the call itself)."""
    import graphc.api as api
    from graphc.frontend.torch import importer
    phases = {"translate": 0.0, "passes": 0.0, "compile": 0.0}

    def timed(mod, name, key):
        inner = getattr(mod, name)

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                phases[key] += time.perf_counter() - t0
        setattr(mod, name, wrapper)
    timed(importer, "translate_graph", "translate")
    timed(api, "_optimized", "passes")
    timed(api, "compile", "compile")
    return phases


def compiled_graphs(peer):
    """Graphs the backend compiled so far (graphc: its own count; inductor: dynamo's)."""
    if peer == "graphc":
        from graphc.frontend.torch import dynamo
        return dynamo._COUNT[0]
    if peer == "inductor":
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    return 0


def profile(family, S=512, top=25):
    """torch.compile(backend="graphc") once, then exe.profile of every graph it compiled on
    the arrays of its last call, beside the whole compiled call and the eager one."""
    import torch
    from graphc.frontend.torch import dynamo
    m = model(family)
    runners = []
    compile_fx = dynamo.compile_fx

    class Kept:
        """The Runner dynamo calls, remembering its last arguments."""

        def __init__(self, runner):
            self.runner, self.last = runner, None

        def __call__(self, *args):
            self.last = args
            return self.runner(*args)

    def keep(*a, **k):
        runners.append(Kept(compile_fx(*a, **k)))
        return runners[-1]
    dynamo.compile_fx = keep

    def fwd(ids):
        return m(input_ids=ids, use_cache=False).last_hidden_state
    run = torch.compile(fwd, backend="graphc", dynamic=True)
    ids = torch.randint(0, 32000, (1, S))
    with torch.no_grad():
        run(ids)
        for name, f in (("torch.compile(backend='graphc')", run), ("eager", fwd)):
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                f(ids)
                ts.append(time.perf_counter() - t0)
            print(f"{family} S={S}: {name} median {sorted(ts)[1] * 1e3:.1f} ms")
    for kept in runners:
        r, args = kept.runner, kept.last
        args = args[0] if len(args) == 1 and isinstance(args[0], list) else args
        arrays = [a.detach().numpy() for is_t, a in zip(r.tensor_args, args) if is_t]
        t0 = time.perf_counter()
        r.exe(*arrays)
        print(f"\n{r.exe.graph.name}: exe call {1e3 * (time.perf_counter() - t0):.1f} ms, "
              f"inputs {[list(a.shape) for a in arrays]}; BLAS {blas()}")
        print(r.exe.profile(*arrays, repeat=3).table(top))


KNOWN = ("--child", "--profile", "--omp-default", "--repeat", "--rounds", "--families")


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    unknown = [a for a in sys.argv[1:] if a.startswith("-") and a not in KNOWN]
    if unknown and sys.argv[1] != "--child":
        sys.exit(f"torch_compile.py: unknown option {unknown[0]} (--help lists them)")
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3])
    if len(sys.argv) > 1 and sys.argv[1] == "--profile":
        return profile(sys.argv[2] if len(sys.argv) > 2 else "gpt2")
    from graphc.timing import blas_report
    print(blas_report())
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"(1/5/15 min) on {os.cpu_count()} CPUs; every peer's environment adds "
          f"{OPENMP_ENV or 'nothing'}", flush=True)
    repeat, rounds = _flag("--repeat", REPEAT), _flag("--rounds", ROUNDS)
    families = _flag("--families", ",".join(FAMILIES), str).split(",")
    print(f"median of {turns.calls(repeat, rounds)} calls a peer at S=512, the peers taking "
          f"turns over {rounds} rounds", flush=True)
    for family in families:
        with tempfile.TemporaryDirectory() as cache:
            specs = []
            for peer in PEERS:
                d = os.path.join(cache, peer)            # cold: empty caches per peer
                env = dict(os.environ, GRAPHC_CACHE_DIR=d,
                           TORCHINDUCTOR_CACHE_DIR=os.path.join(d, "inductor"))
                env.update(OPENMP_ENV)
                specs.append((peer, [sys.executable, __file__, "--child", peer, family], env))
            peers, errors = turns.start(specs)
            turns.take_turns(peers, ["512"], repeat, rounds)
        for e in errors + [f"{p.name}: {p.error}" for p in peers if p.error]:
            print(f"{family} failed: {e}")
        res = {}
        for p in peers:
            if p.error is None and p.times.get("512"):
                times = sorted(p.times["512"])
                res[p.name] = dict(p.info, median=times[len(times) // 2] / 1e3)
        for peer in PEERS:
            if peer not in res:
                continue
            r = res[peer]
            print(f"{family:6s} {peer:9s} median {r['median'] * 1e3:8.1f} ms  first call "
                  f"{r['first']:6.1f} s  new length {r['new_len']:6.2f} s  graphs compiled "
                  f"{r['compiles'][0]} -> {r['compiles'][1]}  BLAS {r['blas']}",
                  flush=True)
        if "graphc" in res:
            ph = res["graphc"]["phases"]
            print(f"{family:6s} graphc first call {res['graphc']['first']:.1f} s: translate "
                  f"{ph['translate']:.1f} s, passes {ph['passes']:.1f} s, lowering + Numba "
                  f"build {ph['compile'] - ph['passes']:.1f} s, dynamo + AOTAutograd + the "
                  f"call {res['graphc']['first'] - ph['translate'] - ph['compile']:.1f} s")
            g = res["graphc"]["median"]
            for peer in ("eager", "inductor"):
                if peer in res:
                    print(f"{family:6s} graphc / {peer}: {g / res[peer]['median']:.2f}")


def _flag(name, default, kind=int):
    """The value after ``name`` on the command line, else ``default``."""
    if name in sys.argv[1:-1]:
        return kind(sys.argv[sys.argv.index(name) + 1])
    return default


if __name__ == "__main__":
    main()
