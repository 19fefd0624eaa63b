"""The built-in rewrite rules of ``fuse_patterns`` (see patterns.py for the language)."""
from __future__ import annotations

from .. import ops as F
from .patterns import Alt, Op, Rule, Var, keepdims, last_axis, opt_scale, register_rule


def _rank_at_least(n):
    def check(graph, node):
        return None if node.type.rank >= n else f"rank {node.type.rank} < {n}"
    return check


def _swap_last2(t):
    axes = list(range(t.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return F.transpose(t, axes=tuple(axes))


# -- softmax(scale(q @ k^T) [+ mask]) @ v => attention ---------------------------------
_scores = opt_scale(Op("matmul", Var("q", _rank_at_least(2)), Var("kT", _rank_at_least(2)),
                       name="qk"))
_masked = Op("add", _scores, Op("causal_mask", name="mask"), commutative=True, name="masked")
ATTENTION = Op("matmul",
               Op("softmax", Alt(_masked, _scores), axis=last_axis, name="probs"),
               Var("v", _rank_at_least(2)))


def _attention_check(m):
    q, kT, v = m.node("q"), m.node("kT"), m.node("v")
    if not (q.type.rank == kT.type.rank == v.type.rank):
        return f"q, k^T, v ranks differ ({q.type}, {kT.type}, {v.type})"
    if q.type.shape[:-2] != kT.type.shape[:-2] or q.type.shape[:-2] != v.type.shape[:-2]:
        return (f"batch dims of q {q.type}, k^T {kT.type}, v {v.type} differ "
                "(attention does not broadcast heads)")
    if m.has("mask"):
        scores = m.node("qk").type
        if m.node("mask").type.shape != scores.shape[-2:]:
            return f"mask {m.node('mask').type} is not [S, T] of the scores {scores}"
    return None


def _attention_build(m):
    scale = m.node("scale").attrs["factor"] if m.has("scale") else 1.0
    return F.attention(m["q"], _swap_last2(m["kT"]), m["v"], scale=scale,
                       causal=m.has("mask"))


register_rule(Rule("softmax(scale(q @ k^T) [+ mask]) @ v => attention", ATTENTION,
                   _attention_build, _attention_check))


# -- activation(x @ w + b) => gemm with epilogue ---------------------------------------
def _w2d(graph, node):
    return None if node.type.rank == 2 else f"weight {node.type} is not 2-D"


def _linear():
    return Op("add", Op("matmul", Var("x", _rank_at_least(1)), Var("w", _w2d), name="mm"),
              Var("b"), commutative=True, name="biased")


def _bias_check(m):
    out = m.node("mm").type
    b = m.node("b").type
    if b.rank > 1 and any(d != 1 for d in b.shape[:-1]) or b.shape[-1:] != out.shape[-1:]:
        return f"{b} is not a bias over the last axis of {out}"
    return None


_ACTS = {"relu": "relu", "silu": "silu"}


def _act_build(act):
    def build(m):
        return F.gemm(m["x"], m["w"], m["b"], activation=act(m) if callable(act) else act)
    return build


register_rule(Rule("relu(x @ w + b) => gemm+relu", Op("relu", _linear()),
                   _act_build("relu"), _bias_check))
register_rule(Rule("gelu(x @ w + b) => gemm+gelu", Op("gelu", _linear(), name="act"),
                   _act_build(lambda m: "gelu" if m.node("act").attrs["approximate"] == "none"
                              else "gelu_tanh"), _bias_check))
register_rule(Rule("silu(x @ w + b) => gemm+silu", Op("silu", _linear()),
                   _act_build("silu"), _bias_check))
register_rule(Rule("x @ w + b => gemm", _linear(), _act_build("none"), _bias_check))


# -- decomposed layernorm / rmsnorm => the ops -----------------------------------------
def _mean_last(x):
    return Op("mean", x, axis=last_axis, keepdims=keepdims)


_eps = Var("eps", lambda g, n: None if n.op == "constant" and g.constants[n.id].size == 1
           else "eps is not a scalar constant")
_xc = Op("sub", Var("x"), _mean_last(Var("x")), name="xc")
_var = _mean_last(Op("mul", _xc, _xc))
_ln_norm = Alt(Op("mul", _xc, Op("rsqrt", Op("add", _var, _eps, commutative=True)),
                  commutative=True),
               Op("div", _xc, Op("sqrt", Op("add", _var, _eps, commutative=True))))
LAYERNORM = Op("add", Op("mul", _ln_norm, Var("w"), commutative=True), Var("b"),
               commutative=True)


def _eps_value(m) -> float:
    return float(m.graph.constants[m.captures["eps"]].reshape(()))


def _norm_param_check(names):
    def check(m):
        x = m.node("x").type
        for n in names:
            t = m.node(n).type
            if t.shape != (x.shape[-1],):
                return f"{n} {t} is not a [{x.shape[-1]}] vector over the last axis of {x}"
        return None
    return check


register_rule(Rule("(x - mean) * rsqrt(var + eps) * w + b => layernorm", LAYERNORM,
                   lambda m: F.layernorm(m["x"], m["w"], m["b"], eps=_eps_value(m)),
                   _norm_param_check(("w", "b"))))

_ms = _mean_last(Op("mul", Var("x"), Var("x")))
_rms_norm = Alt(Op("mul", Var("x"), Op("rsqrt", Op("add", _ms, _eps, commutative=True)),
                   commutative=True),
                Op("div", Var("x"), Op("sqrt", Op("add", _ms, _eps, commutative=True))))
RMSNORM = Op("mul", _rms_norm, Var("w"), commutative=True)
register_rule(Rule("x * rsqrt(mean(x^2) + eps) * w => rmsnorm", RMSNORM,
                   lambda m: F.rmsnorm(m["x"], m["w"], eps=_eps_value(m)),
                   _norm_param_check(("w",))))


# -- layernorm(a + b) => add_layernorm -------------------------------------------------
ADD_LAYERNORM = Op("layernorm", Op("add", Var("a"), Var("r"), name="sum"), Var("w"),
                   Var("beta"))


def _add_ln_check(m):
    if m.node("a").type != m.node("sum").type and m.node("r").type != m.node("sum").type:
        return "neither operand of the residual add has the full shape"
    return None



def _add_ln_build2(m):
    a, r = ("a", "r") if m.node("a").type == m.node("sum").type else ("r", "a")
    eps = m.graph.nodes[m.root].attrs["eps"]
    return F.add_layernorm(m[a], m[r], m["w"], m["beta"], eps=eps)


register_rule(Rule("layernorm(a + residual) => add_layernorm", ADD_LAYERNORM,
                   _add_ln_build2, _add_ln_check))
