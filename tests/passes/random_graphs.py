"""Random graphs for differential fuzzing of the pass pipeline.

Each graph mixes the shapes a Transformer has ([R, C] and [H, R, C] with R symbolic or
fixed), broadcasting constants, and the forms the rewrite rules look for (attention,
gemm epilogues, hand-written layernorm/rmsnorm, residual + layernorm), all in float64 and
numerically tame (no overflow, no log of negatives), so results can be compared at 1e-10.
"""
from __future__ import annotations

import numpy as np

import graphc


class _Gen:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.R = "S" if rng.random() < 0.6 else 5
        self.C = int(rng.choice([4, 6]))
        self.H = 2

    def const(self, *shape):
        return self.rng.standard_normal(shape)

    def pick(self, pool, rank=None, shape=None):
        cands = [t for t in pool if (rank is None or t.ndim == rank)
                 and (shape is None or t.shape == shape)]
        return cands[self.rng.integers(len(cands))] if cands else None

    def step(self, pool):
        r = self.rng
        x = pool[r.integers(len(pool))]
        C = x.shape[-1]
        kind = r.integers(16)
        if kind == 0:
            f = r.choice(["relu", "tanh", "sigmoid", "neg", "silu", "gelu"])
            return getattr(graphc, f)(x)
        if kind == 1:
            return graphc.scale(x, float(r.uniform(-2, 2)))
        if kind == 2:  # binary with a broadcasting constant
            shapes = [(C,), (1, C), ()]
            c = self.const(*shapes[r.choice(3, p=[0.5, 0.3, 0.2])])
            op = r.choice(["add", "sub", "mul", "maximum"])
            return getattr(graphc, op)(x, c) if r.random() < 0.7 else getattr(graphc, op)(c, x)
        if kind == 3:  # binary between two values of one shape
            y = self.pick(pool, shape=x.shape)  # x itself at least
            return getattr(graphc, r.choice(["add", "sub", "mul"]))(x, y)
        if kind == 4:  # linear layer, maybe with bias and activation
            w = self.const(C, int(r.choice([4, 6]))) / np.sqrt(C)
            h = x @ w
            if r.random() < 0.7:
                h = h + self.const(w.shape[1])
            if r.random() < 0.5:
                h = getattr(graphc, r.choice(["relu", "gelu", "silu"]))(h)
            elif r.random() < 0.5:
                h = graphc.scale(h, float(r.uniform(0.1, 2)))  # foldable into w
            return h
        if kind == 5:
            return graphc.softmax(x, axis=int(r.choice([-1, -2])))
        if kind == 6:  # library norms
            if r.random() < 0.5:
                return graphc.layernorm(x, self.const(C), self.const(C), eps=1e-5)
            return graphc.rmsnorm(x, self.const(C), eps=1e-6)
        if kind == 7:  # hand-written layernorm (the rule should find it)
            mu = x.mean(axis=-1, keepdims=True)
            xc = x - mu
            var = (xc * xc).mean(axis=-1, keepdims=True)
            return xc * graphc.rsqrt(var + 1e-5) * self.const(C) + self.const(C)
        if kind == 8:  # hand-written rmsnorm
            return x * graphc.rsqrt((x * x).mean(axis=-1, keepdims=True) + 1e-6) * self.const(C)
        if kind == 9:  # reductions, with and without keepdims
            op = r.choice(["sum", "mean", "max"])
            if r.random() < 0.6:
                return x - getattr(graphc, op)(x, axis=-1, keepdims=True)
            red = getattr(graphc, op)(x, axis=-1)
            return red.reshape(red.shape + (1,)) * self.const(C)
        if kind == 10:  # attention on [H, R, C] values
            q = self.pick(pool, rank=3)
            q = self.heads(x) if q is None else q
            k = self.pick(pool, shape=q.shape)
            k = q if k is None else k
            v = self.pick(pool, shape=q.shape)
            v = q if v is None else v
            s = q @ k.transpose(0, 2, 1)
            if r.random() < 0.7:
                s = graphc.scale(s, float(1 / np.sqrt(q.shape[-1])))
            if r.random() < 0.5:
                s = s + graphc.causal_mask(q.shape[1], q.shape[1], dtype="float64")
            return graphc.softmax(s, axis=-1) @ v
        if kind == 11:
            return self.heads(x)
        if kind == 12:  # back from heads, or a transpose of the last two axes
            if x.ndim == 3:
                return x.transpose(1, 0, 2).reshape(x.shape[1], x.shape[0] * C)
            return graphc.tanh(x.T).T
        if kind == 13:  # residual + layernorm (post-norm)
            y = self.pick(pool, shape=x.shape)
            return graphc.layernorm(x + y, self.const(C), self.const(C))
        if kind == 14:  # slice and concat on the last axis
            part = x[..., 1:]
            return graphc.concat([part, x[..., :1]], axis=-1)
        # safe sqrt / rsqrt / log / exp
        f = r.choice(["sqrt", "rsqrt", "log", "exp"])
        if f == "exp":
            return graphc.exp(graphc.tanh(x))
        return getattr(graphc, f)(x * x + 1.0)

    def heads(self, x):
        if x.ndim == 3:
            return x
        C = x.shape[-1]
        return x.reshape(x.shape[0], self.H, C // self.H).transpose(1, 0, 2)


def random_graph(seed: int, n_ops: int | None = None) -> graphc.Graph:
    rng = np.random.default_rng(seed)
    gen = _Gen(rng)
    n_inputs = int(rng.integers(1, 3))
    specs = [graphc.spec((gen.R, gen.C), "float64") for _ in range(n_inputs)]
    n_ops = n_ops or int(rng.integers(4, 14))

    def fn(*xs):
        pool = list(xs)
        for _ in range(n_ops):
            pool.append(gen.step(pool))
        outs = [pool[-1]]
        if rng.random() < 0.4 and len(pool) > n_inputs + 1:
            extra = pool[int(rng.integers(n_inputs, len(pool) - 1))]
            outs.append(extra)
        return tuple(outs)
    return graphc.trace(fn, *specs, name=f"random_{seed}")
