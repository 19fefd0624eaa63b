"""Algebraic simplification, repeated to a fixed point, written as rewrite rules in the
pattern language of the fusion rules (patterns.py) and applied by the same engine
(``patterns.apply``). ``RULES`` is the set, a value other passes can apply or extend
(``simplify.RULES + my_rules``):

* identities: ``scale(x, 1)``, ``x * 1``, ``x + 0``, ``x - 0``, ``x / 1``, identity
  transpose/reshape;
* ``transpose(transpose(x))`` -> one transpose; ``reshape(reshape(x))`` -> one reshape;
* ``scale(scale(x, a), b)`` -> ``scale(x, a*b)``; ``x * c`` (c a scalar constant) ->
  ``scale(x, c)``; ``pow(x, 2)`` / ``pow(x, 3)`` (a constant exponent) -> ``x*x`` /
  ``(x*x)*x``;
* a constant scale folded into the constant weight it can reach through single-use
  reshapes, transposes, bias adds and matmuls: ``scale(q @ k^T, 1/sqrt(d))`` with
  ``q = (x @ W_Q + b_Q)`` viewed as heads becomes ``q' @ k^T`` with ``W_Q, b_Q`` scaled.

At each node the rules of its op are tried in order (identities before merges); each
sweep goes producers first, so a merged operand is seen by its user in the same sweep.
The identities and chain merges copy nothing, so they fire even where an inner node has
other users (``exclusive=False``).
"""
from __future__ import annotations

import numpy as np

from .. import ops as F
from ..ir.graph import Graph
from .manager import note, register_pass
from .patterns import Alt, Op, Rule, RuleSet, Var, apply
from .rewrite import const_value, is_const_scalar, single_user

MAX_ROUNDS = 100


def _same_type(graph, a, b) -> bool:
    return graph.nodes[a].type == graph.nodes[b].type


def _scalar_of(graph, nid):
    if "value" in graph.nodes[nid].attrs:  # the exact literal the user wrote
        return graph.nodes[nid].attrs["value"]
    v = const_value(graph, nid)
    if v is not None and v.size == 1 and v.dtype.kind == "f":
        return float(v.reshape(()))
    return None


# -- operand checks and match conditions ------------------------------------------------
def _const_all(value):
    def check(graph, node):
        return None if is_const_scalar(graph, node.id, value) else \
            f"not a constant of {value}s"
    return check


def _scalar(graph, node):
    return None if _scalar_of(graph, node.id) is not None else "not a scalar constant"


def _keeps_type(name):
    """The match condition: the captured ``name`` has the root's type (so it can stand in
    for the root)."""
    def check(m):
        return None if _same_type(m.graph, m.captures[name], m.root) else \
            f"{m.node(name).name} {m.node(name).type} is not {m.graph.nodes[m.root].type}"
    return check


def _identity_axes(value, node, graph) -> bool:
    return value == tuple(range(node.type.rank))


def _passthrough(m):
    return m["x"]


def _rule(name, pattern, build, check=None):
    return Rule(name, pattern, build, check, exclusive=False)


_x, _c = Var("x"), Var("c", _scalar)
_one, _zero = Var("one", _const_all(1)), Var("zero", _const_all(0))

IDENTITIES = RuleSet([
    _rule("scale(x, 1) => x", Op("scale", _x, factor=1.0), _passthrough),
    _rule("x * 1 => x", Op("mul", _x, _one), _passthrough, _keeps_type("x")),
    _rule("1 * x => x", Op("mul", _one, _x), _passthrough, _keeps_type("x")),
    _rule("x + 0 => x", Op("add", _x, _zero), _passthrough, _keeps_type("x")),
    _rule("0 + x => x", Op("add", _zero, _x), _passthrough, _keeps_type("x")),
    _rule("x - 0 => x", Op("sub", _x, _zero), _passthrough, _keeps_type("x")),
    _rule("x / 1 => x", Op("div", _x, _one), _passthrough, _keeps_type("x")),
    _rule("transpose(x, identity) => x", Op("transpose", _x, axes=_identity_axes),
          _passthrough),
    _rule("reshape(x) to its own shape => x", Op("reshape", _x), _passthrough,
          _keeps_type("x")),
], "simplify identities")


def _compose_transposes(m):
    p1, p2 = m.node("inner").attrs["axes"], m.graph.nodes[m.root].attrs["axes"]
    return F.transpose(m["x"], axes=tuple(p1[a] for a in p2))


def _merge_scales(m):
    f = m.node("inner").attrs["factor"] * m.graph.nodes[m.root].attrs["factor"]
    return F.scale(m["x"], f)


def _scale_of_scalar(m):
    return F.scale(m["x"], _scalar_of(m.graph, m.captures["c"]))


def _weight_reachable(m):
    path: list = []
    return None if _weight_path(m.graph, m.captures["x"], path) else \
        "no single-use path to a constant weight"


def _fold_into_weight(m):
    _fold_scale_into_weight(m.graph, m.graph.nodes[m.root])
    return m["x"]


def _small_power(graph, node):
    v = _scalar_of(graph, node.id)
    return None if v in (2.0, 3.0) else "not the constant 2 or 3"


def _power_as_products(m):
    x = m["x"]
    return F.mul(x, x) if _scalar_of(m.graph, m.captures["p"]) == 2.0 else \
        F.mul(F.mul(x, x), x)


MERGES = RuleSet([
    _rule("transpose(transpose(x)) => transpose(x)",
          Op("transpose", Op("transpose", _x, name="inner")), _compose_transposes),
    _rule("reshape(reshape(x)) => reshape(x)", Op("reshape", Op("reshape", _x)),
          lambda m: F.reshape(m["x"], shape=m.graph.nodes[m.root].attrs["shape"])),
    _rule("scale(scale(x, a), b) => scale(x, a*b)",
          Op("scale", Op("scale", _x, name="inner")), _merge_scales),
    _rule("scale(x, s) => x with s folded into the constant weight x reaches",
          Op("scale", _x), _fold_into_weight, _weight_reachable),
    _rule("x * scalar => scale(x, scalar)", Op("mul", _x, _c), _scale_of_scalar,
          _keeps_type("x")),
    _rule("scalar * x => scale(x, scalar)", Op("mul", _c, _x), _scale_of_scalar,
          _keeps_type("x")),
    # pow with a constant exponent of 2 or 3 (GPT-2's tanh-GELU writes pow(x, 3.0)) as
    # products: a kernel's pow is a libm call per element that a loop does not
    # vectorise; x*x is what pow(x, 2) rounds to, (x*x)*x within an ulp of pow(x, 3)
    _rule("pow(x, 2 or 3) => x*x or x*x*x", Op("pow", _x, Var("p", _small_power)),
          _power_as_products, _keeps_type("x")),
], "simplify merges")


# -- batched matmuls in a flattened batch: [B*H, S, T] -> [B, H, S, T] -------------------
# Attention written with bmm (GPT-Neo, BLOOM, DeBERTa, hand-written code) computes the
# scores in a [B*H, S, T] batch and views them as [B, H, S, T] for the masks and the
# softmax, then views the probabilities back for the bmm with v. These rules move such
# batch reshapes (the last two dims kept, only the batch dims regrouped) through the
# matmuls and the elementwise ops between, so the chain reads in the model's own 4-D
# shape and the attention rule sees q @ k^T and p @ v there. Only matmuls of rank >= 3
# and the scale / add / sub / mul / div between them and the reshape are moved.

def _batch_regroup(src_shape, dst_shape):
    """dst's batch dims when reshape src -> dst only splits the batch dims into more (the
    last two kept, the same number of elements in the batch: [B*H, S, T] -> [B, H, S, T]),
    else None. One direction only: the split rule moves such a reshape under an op and
    the merge rule moves the inverse one above a matmul, so neither undoes the other."""
    from ..ir.dims import prod
    if len(src_shape) < 3 or tuple(src_shape[-2:]) != tuple(dst_shape[-2:]) \
            or len(dst_shape) <= len(src_shape):
        return None
    a, b = tuple(src_shape[:-2]), tuple(dst_shape[:-2])
    if prod(a) != prod(b) or [d for d in a if d != 1] == [d for d in b if d != 1]:
        return None     # (only unit dims added: no batch dim is split)
    return b


def _regrouped(graph, nid, src_batch, dst_batch):
    """Operand ``nid`` (broadcasting to src_batch + [S, T]) reshaped for dst_batch, or
    None when its batch dims are neither src_batch nor all 1 (a partial broadcast)."""
    t = graph.nodes[nid].type
    nb = len(src_batch)
    shape = (1,) * max(0, nb + 2 - t.rank) + tuple(t.shape)
    batch, last = shape[:-2], shape[-2:]
    if len(batch) != nb:
        return None
    if tuple(batch) == tuple(src_batch):
        return tuple(dst_batch) + tuple(last)
    if all(d == 1 for d in batch):
        return "as is"
    return None


def _batched(graph, nid, depth=4) -> bool:
    """``nid`` is a rank >= 3 matmul, or reaches one through scale / add / sub / mul / div."""
    node = graph.nodes[nid]
    if node.op == "matmul":
        return node.type.rank >= 3
    if depth == 0 or node.op not in _THROUGH:
        return False
    return any(_batched(graph, i, depth - 1) for i in node.inputs)


_THROUGH = ("scale", "add", "sub", "mul", "div")


def _split_check(m):
    g = m.graph
    inner, root = m.node("inner"), g.nodes[m.root]
    dst = _batch_regroup(inner.type.shape, root.type.shape)
    if dst is None:
        return "the reshape does more than regroup the batch dims"
    if not _batched(g, inner.id):
        return "no batched matmul under it"
    src = inner.type.shape[:-2]
    if inner.op == "matmul":
        a, b = (g.nodes[i] for i in inner.inputs)
        if a.type.rank < 2 or b.type.rank < 2:
            return "a matmul of a vector"
    for i in inner.inputs:
        if _regrouped(g, i, src, dst) is None:
            return f"operand {g.nodes[i].name} {g.nodes[i].type} broadcasts partly"
    return None


def _split_build(m):
    g = m.graph
    inner, root = m.node("inner"), g.nodes[m.root]
    src, dst = inner.type.shape[:-2], root.type.shape[:-2]
    ops_in = []
    for name in ("a", "b")[:len(inner.inputs)]:
        shape = _regrouped(g, m.captures[name], src, dst)
        x = m[name]
        ops_in.append(x if shape == "as is" else F.reshape(x, shape=shape))
    fn = {"matmul": F.matmul, "add": F.add, "sub": F.sub, "mul": F.mul, "div": F.div}
    if inner.op == "scale":
        return F.scale(ops_in[0], inner.attrs["factor"])
    return fn[inner.op](*ops_in)


def _merge_check(m):
    a, b = m.node("ra"), m.node("rb")
    pa, pb = m.node("pa"), m.node("pb")
    # the reshapes merge batch dims ([B, H, T, D] -> [B*H, T, D]): the inverse regroup
    da = _batch_regroup(a.type.shape, pa.type.shape)
    db = _batch_regroup(b.type.shape, pb.type.shape)
    if da is None or db is None or da != db:
        return "the operands are not both batch reshapes from one batch shape"
    if tuple(pa.type.shape[:-2]) != tuple(pb.type.shape[:-2]):
        return "the operands come from different batch shapes"
    return None


def _merge_build(m):
    g = m.graph
    out = F.matmul(m["pa"], m["pb"])
    return F.reshape(out, shape=g.nodes[m.root].type.shape)


BATCH_RESHAPES = RuleSet([
    Rule("reshape(op(..)) regrouping the batch => op(reshaped operands)",
         Op("reshape", Alt(Op("scale", Var("a"), name="inner"),
                           Op(_THROUGH[1:] + ("matmul",), Var("a"), Var("b"), name="inner"))),
         _split_build, _split_check),
    Rule("matmul(reshape(a), reshape(b)) merging one batch => reshape(matmul(a, b))",
         Op("matmul", Op("reshape", Var("pa"), name="ra"), Op("reshape", Var("pb"), name="rb")),
         _merge_build, _merge_check),
], "simplify batch reshapes")

# Identities first: at a node, an identity wins over a merge (as x * 1 before x * c).
RULES = RuleSet(IDENTITIES + MERGES + BATCH_RESHAPES, "simplify")


def _weight_path(graph: Graph, nid: int, path: list) -> bool:
    """Find single-use nodes from ``nid`` back to a constant matmul weight through
    reshape / transpose / add(x, const) / matmul; append (node, operand index to scale)
    steps to ``path``. The scale then moves onto constants: every bias on the way and the
    weight at the end."""
    node = graph.nodes[nid]
    if not single_user(graph, nid):
        return False
    if node.op in ("reshape", "transpose"):
        return _weight_path(graph, node.inputs[0], path)
    if node.op == "add":
        for k in (0, 1):
            if const_value(graph, node.inputs[1 - k]) is not None:
                path.append((nid, 1 - k))
                if _weight_path(graph, node.inputs[k], path):
                    return True
                path.pop()
        return False
    if node.op == "matmul":
        for k in (1, 0):
            if const_value(graph, node.inputs[k]) is not None:
                path.append((nid, k))
                return True
        for k in (0, 1):
            mark = len(path)
            if _weight_path(graph, node.inputs[k], path):
                return True
            del path[mark:]
    return False


def _fold_scale_into_weight(graph: Graph, node) -> bool:
    """Move the factor of scale ``node`` onto the constants its weight path reaches; the
    scale then just passes its operand through (the caller replaces its uses)."""
    path: list = []
    if not _weight_path(graph, node.inputs[0], path):
        return False
    s = node.attrs["factor"]
    scaled: dict[int, int] = {}
    for nid, k in path:
        cid = graph.nodes[nid].inputs[k]
        if cid not in scaled:
            v = graph.constants[cid]
            new = (v.astype(np.float64) * s).astype(v.dtype)
            scaled[cid] = graph.add_constant(new, loc=graph.nodes[cid].loc,
                                             name=graph.nodes[cid].attrs.get("name")).id
        ins = list(graph.nodes[nid].inputs)
        ins[k] = scaled[cid]
        graph.set_inputs(nid, ins)
    note("fold_scale", f"scale {s:g} at {node.name} folded into constant weight "
         f"%{path[-1][0]} (and {len(path) - 1} bias adds)", node=node.name)
    return True


@register_pass("simplify")
def simplify(graph: Graph) -> Graph:
    apply(graph, RULES, consumers_first=False, max_rounds=MAX_ROUNDS, prune_each=False,
          skip_dead=False, explain=False)
    return graph
