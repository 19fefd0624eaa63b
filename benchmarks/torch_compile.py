"""torch.compile(backend="graphc") vs eager torch vs torch.compile(backend="inductor") on
this CPU: a GPT-2-small-shaped and a Llama-shaped model (random weights, 4 layers, hidden
768, S=512, batch 1), each peer in its own subprocess (no peer warms another's caches),
median of several runs, ratios printed, plus the BLAS each peer's process runs.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/torch_compile.py
"""
import json
import subprocess
import sys
import time

PEERS = ["eager", "inductor", "graphc"]
FAMILIES = ["gpt2", "llama"]
RUNS = 5


def blas():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} "
                     f"({i.get('architecture')}, {i.get('num_threads')} threads)"
                     for i in threadpool_info() if i.get("user_api") == "blas")


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
    import torch
    import graphc  # noqa: F401  (registers nothing; the entry point names "graphc")
    m = model(family)

    def fwd(ids):
        return m(input_ids=ids, use_cache=False).last_hidden_state
    run = fwd if peer == "eager" else torch.compile(fwd, backend=peer, dynamic=True)
    ids = torch.randint(0, 32000, (1, S))
    with torch.no_grad():
        t0 = time.perf_counter()
        run(ids)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        run(torch.randint(0, 32000, (1, S // 2)))        # a new length: no recompile wanted
        new_len = time.perf_counter() - t0
        times = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            run(ids)
            times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"median": times[len(times) // 2], "first": first, "new_len": new_len,
                      "blas": blas()}))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3])
    for family in FAMILIES:
        res = {}
        for peer in PEERS:
            out = subprocess.run([sys.executable, __file__, "--child", peer, family],
                                 capture_output=True, text=True)
            lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
            if out.returncode or not lines:
                print(f"{family} {peer}: failed\n{out.stderr[-2000:]}")
                continue
            res[peer] = json.loads(lines[-1])
            r = res[peer]
            print(f"{family:6s} {peer:9s} median {r['median'] * 1e3:8.1f} ms  first call "
                  f"{r['first']:6.1f} s  new length {r['new_len']:6.2f} s  BLAS {r['blas']}",
                  flush=True)
        if "graphc" in res:
            g = res["graphc"]["median"]
            for peer in ("eager", "inductor"):
                if peer in res:
                    print(f"{family:6s} graphc / {peer}: {g / res[peer]['median']:.2f}")


if __name__ == "__main__":
    main()
