"""The built-in rewrite rules of ``fuse_patterns`` (see patterns.py for the language)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import ops as F
from ..ir.types import TensorType
from .manager import note
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
# The scores: q @ k^T, optionally scaled (scale(s), s / c, s * c with c a one-element
# constant; a scale of q itself is absorbed too), optionally soft-capped (c * tanh(s / c),
# Gemma 2: the op's softcap). Masks: additive operands of one or two
# adds (a padding mask [B, 1, 1, T], a sliding window [S, T], anything broadcasting to
# the scores; a causal_mask of the scores' [S, T], or a reshape of one, becomes the
# op's causal flag, also inside a sum with another mask), or a bool mask through
# where(mask, scores, fill). k and v repeated per query head (grouped-query attention
# written with copies: expand + reshape, a concat of copies) are read from their source
# instead; a broadcasting matmul over a [..., Hkv, G, S, D] reshape becomes one over
# [..., Hkv * G, S, D] with Hkv kv heads. Only the score chain (the matmul, the scale,
# the adds, the where) must be used by nothing else; the masks and the kv sources are
# read, not replaced.
# A where(keep, scores, fill) beside additive masks joins them as where(keep, 0, fill)
# when the fill is at most this (torch.finfo(float32).min, -inf): adding a score to it
# rounds back to it for any score below ~1e31 in magnitude.
BOOL_AS_ADDITIVE = -1e30


def _one_element(graph, node):
    if node.op == "constant" and graph.constants[node.id].size == 1:
        return None
    return f"{node.op} {node.type} is not a one-element constant"


def _bool_mask(graph, node):
    return None if node.type.dtype == "bool" else f"{node.type} is not a bool mask"


_qk = Op("matmul", Var("q", _rank_at_least(2)), Var("kT", _rank_at_least(2)), name="qk")
_scores = Alt(Op("scale", _qk, name="scale"),
              Op("div", _qk, Var("divisor", _one_element), name="divided"),
              Op("mul", _qk, Var("factor", _one_element), commutative=True,
                 name="multiplied"),
              _qk)
# Gemma 2's soft cap of the scaled scores: c * tanh(s / c) (s / c also as scale(s, 1/c))
_capped = Op("scale", Op("tanh", Alt(Op("div", _scores, Var("cap", _one_element),
                                        name="cap_div"),
                                     Op("scale", _scores, name="cap_in")), name="cap_tanh"),
             name="cap_out")
_any = Alt(_capped, _scores)
_plus = Op("add", _any, Var("m1"), commutative=True, name="plus1")
_plus2 = Op("add", _plus, Var("m2"), commutative=True, name="plus2")
_where = Op("where", Var("keep", _bool_mask), Alt(_plus, _any),
            Var("fill", _one_element), name="where")
# where(mask, fill, scores): the mask marks the keys to drop
_where_not = Op("where", Var("drop", _bool_mask), Var("fill", _one_element),
                Alt(_plus, _any), name="where")
_masked = Alt(Op("add", Alt(_where, _where_not), Var("m2"), commutative=True, name="plus2"),
              _where, _where_not, _plus2, _plus, _any)
_probs = Op("softmax", _masked, axis=last_axis, name="probs")
# where(isnan(p), 0, p): the NaN guard torch's SDPA decomposition (and so its ONNX
# exporter) puts after the softmax, zeroing the row of a query that sees no key. The
# fused attention gives that row NaN, so the replacement zeroes the NaNs of its output
# (a row of NaN probabilities is a row of NaN outputs; a NaN of v itself, which the
# unfused graph would carry to the output, is zeroed too: docs/onnx.md says so).
_guarded = Op("where", Op("isnan", _probs, name="nan_test"), Var("nan_fill", _one_element),
              Var("probs_again"), name="nan_guard")
ATTENTION = Op("matmul", Alt(_probs, _guarded), Var("v", _rank_at_least(2)))


def _const(graph, nid) -> float:
    return float(graph.constants[nid].reshape(()))


def _causal_of(graph, nid, scores) -> bool:
    """``nid`` is causal_mask(S, T) of the scores (or a reshape of it adding leading 1s)."""
    node = graph.nodes[nid]
    if node.op == "reshape":
        inner = graph.nodes[node.inputs[0]]
        lead = node.type.shape[:-2]
        if inner.op != "causal_mask" or any(d != 1 for d in lead) \
                or node.type.shape[-2:] != inner.type.shape:
            return False
        node = inner
    return (node.op == "causal_mask" and node.type.dtype == scores.dtype
            and node.type.shape == scores.shape[-2:])


def _tril_keep(graph, nid, scores, keep=True, depth=4):
    """``nid`` (bool) marks the keys a causal attention keeps (``keep``) or drops, as
    models build it from a constant lower-triangular buffer: a slice of rows T-S..T and
    columns 0..T of tril(ones(N, N)) (GPT-Neo's and nanoGPT's ``bias`` buffer), compared
    ``== 0`` or negated to mark the dropped keys, leading dims of size 1."""
    node = graph.nodes[nid]
    if depth == 0 or node.type.shape[-2:] != scores.shape[-2:] \
            or any(d != 1 for d in node.type.shape[:-2]):
        return False
    if node.op == "logical_not":
        return _tril_keep(graph, node.inputs[0], scores, not keep, depth - 1)
    if node.op == "cast" and node.type.dtype == "bool":
        return _tril_keep(graph, node.inputs[0], scores, keep, depth - 1)
    if node.op == "equal":
        a, b = node.inputs
        for x, zero in ((a, b), (b, a)):
            if graph.nodes[zero].op == "constant" and graph.constants[zero].size == 1 \
                    and float(graph.constants[zero].reshape(())) == 0.0:
                return _tril_keep(graph, x, scores, not keep, depth - 1)
        return False
    if node.op == "constant":                # static sizes: the slice was folded
        c = graph.constants[node.id]
        S, T = c.shape[-2], c.shape[-1]
        i, j = np.arange(S)[:, None], np.arange(T)[None, :]
        kept = (c.reshape(S, T) != 0) == keep
        return S <= T and bool(np.array_equal(kept, j <= i + (T - S)))
    if node.op != "slice" or not keep:
        return False
    src = graph.nodes[node.inputs[0]]
    if src.op != "constant" or src.type.rank < 2:
        return False
    c = graph.constants[src.id]
    n = c.shape[-1]
    if c.shape[-2] != n or any(d != 1 for d in c.shape[:-2]):
        return False
    a = node.attrs
    S, T = scores.shape[-2], scores.shape[-1]
    if tuple(a["steps"][-2:]) != (1, 1) or a["starts"][-1] != 0 or a["stops"][-1] != T \
            or a["starts"][-2] != T - S:
        return False
    lower = np.tril(np.ones((n, n), bool))
    return bool(np.array_equal(c.reshape(n, n) != 0, lower))


def _mask_parts(graph, nid, scores):
    """An additive mask operand as (causal, [other masks]): a causal mask of the
    scores, a sum with one inside (split), or one mask as a whole."""
    if _causal_of(graph, nid, scores):
        return True, []
    node = graph.nodes[nid]
    if node.op == "add":
        (ca, pa), (cb, pb) = (_mask_parts(graph, i, scores) for i in node.inputs)
        if ca or cb:
            return True, pa + pb
    return False, [nid]


def _head_slice(graph, node, axis):
    """(source, head range) of a slice of whole dims except a unit-step range of ``axis``."""
    src = graph.nodes[node.inputs[0]]
    a = node.attrs
    for k, (s, st, n, d) in enumerate(zip(a["starts"], a["steps"], node.type.shape,
                                          src.type.shape)):
        if k == axis:
            if st != 1 or not isinstance(s, int) or not isinstance(n, int):
                return None
            heads = range(s, s + n)
        elif not (s == 0 and st == 1 and n == d):
            return None
    return src.id, heads


def _repeated(graph, nid):
    """(source, group, how) when ``nid`` [..., H, T, d] repeats the heads of a source
    [..., Hkv, T, d] (H = group * Hkv): how = "group" when head h is source head
    h // group (expand + reshape, torch's repeat_interleave, a concat of per-head slices
    each repeated), "tile" when it is h % Hkv (a concat of copies); else None."""
    return _head_repeat(graph, nid)[0]


def _bcast_to(small, big) -> bool:
    """Whether batch dims ``small`` broadcast to ``big`` (NumPy rules)."""
    return len(small) <= len(big) and all(
        a == 1 or a == b for a, b in zip(reversed(small), reversed(big)))


def _head_repeat(graph, nid):
    """(``_repeated``'s answer, None), or (None, why) when ``nid`` copies heads in a way
    the attention op cannot read from the source (for the explain log), or (None, None)
    when it is no head repeat at all."""
    node = graph.nodes[nid]
    t = node.type
    if t.rank < 3:
        return None, None
    axis = t.rank - 3
    if node.op == "repeat":             # graphc.repeat / x.repeat_interleave(n, dim)
        if node.attrs.get("axis") != axis:
            return None, None
        r = node.attrs["repeats"]
        return ((node.inputs[0], r, "group"), None) if r > 1 else (None, None)
    if node.op == "reshape":            # [.., Hkv, G, T, d] -> [.., Hkv * G, T, d]
        return _expand_reshape(graph, node)
    if node.op == "transpose":          # [B, T, Hkv, d] repeated on axis 2, then .transpose(1, 2)
        inner = graph.nodes[node.inputs[0]]
        perm = node.attrs["axes"]
        if inner.op == "repeat" and inner.attrs.get("axis") == perm[axis] \
                and inner.attrs["repeats"] > 1:
            return ((inner.inputs[0], perm), inner.attrs["repeats"], "group"), None
        return None, None
    if not isinstance(t.shape[-3], int) or node.op != "concat" or node.attrs["axis"] != axis:
        return None, None
    H = t.shape[-3]
    base, heads = None, []
    for i in node.inputs:
        x = graph.nodes[i]
        found = _head_slice(graph, x, axis) if x.op == "slice" else None
        b, rng = found if found else (i, range(x.type.shape[axis]))
        if base is None:
            base = b
        if b != base:
            return None, (f"{node.name} (concat) joins heads of different tensors "
                          f"({graph.nodes[base].name}, {graph.nodes[b].name})")
        if not isinstance(rng.stop, int):
            return None, f"{node.name} (concat) joins a symbolic number of heads"
        heads += list(rng)
    n = graph.nodes[base].type.shape[axis]
    src_t = graph.nodes[base].type
    if not isinstance(n, int) or n == 0 or H % n or H == n or src_t.rank != t.rank \
            or src_t.shape[:axis] != t.shape[:axis] or src_t.shape[-2:] != t.shape[-2:]:
        return None, None
    G = H // n
    if heads == [h // G for h in range(H)]:
        return (base, G, "group"), None
    if heads == [h % n for h in range(H)]:
        return (base, G, "tile"), None
    return None, (f"{node.name} (concat) orders the {n} heads of {graph.nodes[base].name} "
                  f"as {heads[:8]}{'...' if H > 8 else ''}: neither h // {G} nor h % {n}")


def _expand_reshape(graph, node):
    """HF's repeat_kv: reshape(broadcast_to(x[:, :, None], [.., Hkv, G, T, d]),
    [.., Hkv * G, T, d]) reads head h // G of x; x[:, None] broadcast to
    [.., G, Hkv, T, d] reads head h % Hkv. x's batch dims may broadcast (a kv shared
    by the batch)."""
    t = node.type
    wide = graph.nodes[node.inputs[0]]
    w = wide.type.shape
    if wide.op != "broadcast_to" or len(w) != t.rank + 1 or w[-2:] != t.shape[-2:] \
            or w[:-4] != t.shape[:-3]:
        return None, None
    one = graph.nodes[wide.inputs[0]]
    o = (1,) * (len(w) - one.type.rank) + tuple(one.type.shape)
    if o[-2:] != w[-2:] or not _bcast_to(o[:-4], w[:-4]):
        return None, (f"{node.name} (reshape of broadcast_to {wide.name}) broadcasts "
                      f"{one.type} to {wide.type} in its last two dims")
    if o[-3] == 1 and o[-4] == w[-4] and w[-3] != 1:
        how, G, at = "group", w[-3], -3            # [.., Hkv, 1, T, d]
    elif o[-4] == 1 and o[-3] == w[-3] and w[-4] != 1:
        how, G, at = "tile", w[-4], -4             # [.., 1, Hkv, T, d]
    else:
        return None, (f"{node.name} (reshape of broadcast_to {wide.name}) repeats no "
                      f"single head dim: {one.type} to {wide.type}")
    if not isinstance(G, int):
        return None, f"{node.name} repeats the kv heads a symbolic number of times ({G})"
    if one.op == "reshape" and one.type.rank == len(w):
        src = graph.nodes[one.inputs[0]]
        keep = tuple(d for k, d in enumerate(one.type.shape) if k != len(w) + at)
        if tuple(src.type.shape) == keep:
            return (src.id, G, how), None
    return None, (f"{node.name} (reshape of broadcast_to {wide.name}): the broadcast "
                  f"{one.name} {one.type} is not a reshape that adds the unit dim to a "
                  "[.., Hkv, T, d] kv tensor")


def _flat_swap(graph, node):
    """x when ``node`` is x [..., T, d] with its last two axes swapped through flattened
    batch dims, reshape(transpose(reshape(x, [n, T, d]), (0, 2, 1)), [..., d, T]) (torch's
    exporter writes k^T of a 4-D k so); else None."""
    if node.op != "reshape":
        return None
    tr = graph.nodes[node.inputs[0]]
    if tr.op != "transpose" or tr.type.rank < 2:
        return None
    r = tr.type.rank
    if tuple(tr.attrs["axes"]) != tuple(range(r - 2)) + (r - 1, r - 2):
        return None
    flat = graph.nodes[tr.inputs[0]]
    if flat.op != "reshape":
        return None
    x = graph.nodes[flat.inputs[0]]
    xs, out = tuple(x.type.shape), tuple(node.type.shape)
    if x.type.rank < 2 or tuple(flat.type.shape[-2:]) != xs[-2:] \
            or out[-2:] != (xs[-1], xs[-2]):
        return None
    if out == xs[:-2] + (xs[-1], xs[-2]):
        return x.id
    # x's batch dims are other dims of the same count (the head split reshape merged into
    # the flattening one): k is reshape(x, out[:-2] + [T, d]), a node not built yet
    return _Reshaped(x.id, TensorType(out[:-2] + xs[-2:], x.type.dtype), node.name)


@dataclass
class _Reshaped:
    """reshape(source) as the kv-repeat readers see a node (a reshape not in the graph)."""
    source: int
    type: TensorType
    name: str
    op: str = "reshape"

    @property
    def inputs(self):
        return [self.source]


def _split(shape, axis, parts):
    return tuple(shape[:axis]) + tuple(parts) + tuple(shape[axis + 1:])


def _attention_check(m):
    """Work out the op's operands (stashed in the match for the build), or say why
    the scores are not an attention's."""
    g = m.graph
    qk = m.node("qk").type
    for name in ("plus1", "plus2", "where"):
        if m.has(name) and m.node(name).type.shape != qk.shape:
            node = m.node(name)
            return (f"the mask of {node.name} ({node.op}) broadcasts the scores {qk} up to "
                    f"{node.type} (attention keeps the scores' shape)")
    if m.has("nan_guard"):
        if m.captures["probs_again"] != m.captures["probs"]:
            return (f"{m.node('nan_guard').name} (where) tests isnan of "
                    f"{m.node('probs').name} but selects {m.node('probs_again').name}")
        if _const(g, m.captures["nan_fill"]) != 0.0:
            return (f"{m.node('nan_guard').name} replaces NaN probabilities by "
                    f"{_const(g, m.captures['nan_fill']):g}, not 0")
    scale = 1.0
    if m.has("scale"):
        scale = m.node("scale").attrs["factor"]
    elif m.has("divisor"):
        d = _const(g, m.captures["divisor"])
        if d == 0:
            return "the scores are divided by 0"
        scale = 1.0 / d
    elif m.has("factor"):
        scale = _const(g, m.captures["factor"])
    softcap = 0.0
    if m.has("cap_out"):
        softcap = m.node("cap_out").attrs["factor"]
        inner = (_const(g, m.captures["cap"]) if m.has("cap_div")
                 else 1.0 / m.node("cap_in").attrs["factor"])
        if not softcap > 0 or abs(inner - softcap) > 1e-6 * softcap:
            return (f"{m.node('cap_tanh').name} (tanh) divides the scores by {inner:g} and "
                    f"multiplies back by {softcap:g}: no soft cap c * tanh(s / c)")
    q = m.node("q")
    if q.op == "scale" and g.users(q.id) == [m.captures["qk"]] and q.id not in g.outputs:
        scale *= q.attrs["factor"]              # scale(q) @ k^T
        q = g.nodes[q.inputs[0]]
    inner = _mask_parts(g, m.captures["m1"], qk) if m.has("m1") else (False, [])
    outer = _mask_parts(g, m.captures["m2"], qk) if m.has("m2") else (False, [])
    causal = inner[0] or outer[0]
    masks, fill = inner[1] + outer[1], float("-inf")
    bool_mask = m.captures.get("keep", m.captures.get("drop"))
    bool_additive = False
    # The two conversions below keep the result only when no mask is added inside the
    # where (where(keep, s + m, fill): a row whose kept keys m hides would see the fill's
    # keys in the graph, and none after the conversion) or when the fill is -inf.
    fill0 = _const(g, m.captures["fill"]) if bool_mask is not None else None
    exact = bool_mask is not None and (not inner[1] or fill0 == float("-inf"))
    if exact and not inner[0] and fill0 <= BOOL_AS_ADDITIVE \
            and _tril_keep(g, bool_mask, qk, keep=not m.has("drop")):
        causal, bool_mask = True, None       # a tril buffer's slice: the causal flag
    if bool_mask is not None:
        fill = fill0
        if masks and fill <= BOOL_AS_ADDITIVE and not inner[0] and exact:
            # where(keep, s, fill) + m == s + where(keep, 0, fill) + m: a fill this low
            # absorbs any score (s + fill rounds to fill), so the bool mask joins the
            # additive ones (GPT-Neo: a causal where, then the padding mask added)
            bool_additive, fill = True, float("-inf")
        elif masks:
            return (f"a bool mask ({g.nodes[bool_mask].name}) and an additive one "
                    f"({', '.join(g.nodes[x].name for x in masks)}) together with the "
                    f"fill {fill:g} (attention takes one mask; with a fill <= "
                    f"{BOOL_AS_ADDITIVE:g} and the additive masks added after the where, "
                    f"or a fill of -inf, the bool mask would join them)")
        if inner[0] and fill != float("-inf"):
            return (f"the causal mask is added inside where(mask, scores, {fill:g}): its "
                    "-inf would be replaced by the fill (add it after the where)")
    for x in masks:
        t = g.nodes[x].type
        if all(isinstance(d, int) for d in t.shape) and _numel(t.shape) == 1:
            return (f"the mask {g.nodes[x].name} {t} adds one value to every score "
                    "(softmax does not change; drop it)")
    kT = m.node("kT")
    if kT.op == "scale" and g.users(kT.id) == [m.captures["qk"]] and kT.id not in g.outputs:
        scale *= kT.attrs["factor"]             # q @ scale(k^T): SDPA's sqrt(scale) on both
        kT = g.nodes[kT.inputs[0]]
        m.captures["kT"] = kT.id
    # k and v: repeated per head (copies) -> their sources
    last2 = tuple(range(kT.type.rank - 2)) + (kT.type.rank - 1, kT.type.rank - 2)
    k = g.nodes[kT.inputs[0]].id if kT.op == "transpose" and kT.attrs["axes"] == last2 \
        else _flat_swap(g, kT)
    v = m.captures["v"]
    rk, why_k = _head_repeat(g, k) if isinstance(k, int) else (None, None)
    if k is None and kT.op == "transpose" and kT.type.rank >= 3:
        # k^T = transpose(repeat(x)) (the head split and the k^T transposes merged): k is
        # that transpose of x with the last two axes swapped back
        inner = g.nodes[kT.inputs[0]]
        perm = tuple(kT.attrs["axes"][i] for i in last2)
        if inner.op == "repeat" and inner.attrs.get("axis") == perm[-3] \
                and inner.attrs["repeats"] > 1:
            rk = ((inner.inputs[0], perm), inner.attrs["repeats"], "group")
    if isinstance(k, _Reshaped):
        rk, why_k = _expand_reshape(g, k)
        k = None
    k_plain = k             # k itself, when the match has it as a node (else k^T swapped)
    rv, why_v = _head_repeat(g, v)
    for what, why in (("k", why_k), ("v", why_v)):
        if why:
            note("kv_copied", f"attention at {g.nodes[m.root].name}: {what} is read as a "
                 f"copy: {why}", node=g.nodes[m.root].name, reason=why)
    if rk is not None and rv is not None and rv[1:] != rk[1:]:
        note("kv_copied", f"attention at {g.nodes[m.root].name}: k and v repeat their heads "
             f"differently (k {rk[2]} of {rk[1]}, v {rv[2]} of {rv[1]}): v is read as a copy",
             node=g.nodes[m.root].name)
    how = None
    if rk is not None:
        k, G, how = rk
        if rv is not None and rv[1:] == (G, how):
            v = rv[0]
        elif how == "tile" and rv is not None:
            how, k = None, k_plain          # k and v tiled differently: k as a copy
    perms = {}      # a source repeated before a transpose: that transpose of the source
    if isinstance(v, tuple):
        v, perms["v"] = v
    if isinstance(k, tuple):
        k, perms["k"] = k
    m.captures.update(q_src=q.id, v_src=v)
    if k is not None:
        m.captures["k_src"] = k
    if len(masks) > 0:
        m.captures.update({f"mask{i}": x for i, x in enumerate(masks)})
    m._attention = dict(scale=scale, causal=causal, masks=len(masks), how=how,
                        group=rk[1] if rk else 1,
                        bool_mask=bool_mask is not None and not bool_additive,
                        bool_additive=bool_additive, fill=fill, invert=m.has("drop"),
                        perms=perms, softcap=softcap)
    return None


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _logical_not(x):
    """~x of a bool tensor: the registered not op, or (x as float) < 0.5."""
    from ..ops.registry import all_ops
    ops = all_ops()
    for name in ("logical_not", "invert", "not"):
        if name in ops:
            return ops[name](x)
    return F.less(F.cast(x, dtype="float32"), 0.5)


def _merge_groups(q, k, v, mask):
    """Shapes with every pair of batch dims where q has (a, g) and k, v have (a, 1) (a
    broadcasting matmul over a [..., Hkv, G, S, D] reshape) merged into a * g, k and v
    keeping a (kv heads read by groups of g query heads): the head split stays a
    strided view of q. None when there is no such pair."""
    nb = q.rank - 2
    if k.rank != q.rank or v.rank != q.rank:
        return None
    mshape = None
    if mask is not None:
        mshape = (1,) * (q.rank - mask.rank) + tuple(mask.shape)
    for i in range(nb - 1):
        a, gq = q.shape[i], q.shape[i + 1]
        if not (isinstance(a, int) and isinstance(gq, int) and gq > 1 and a > 1):
            continue
        if k.shape[i:i + 2] != (a, 1) or v.shape[i:i + 2] != (a, 1):
            continue
        if mshape is not None and mshape[i:i + 2] not in ((1, 1), (a, gq)):
            continue
        mq = tuple(q.shape[:i]) + (a * gq,) + tuple(q.shape[i + 2:])
        mk = tuple(k.shape[:i]) + (a,) + tuple(k.shape[i + 2:])
        mv = tuple(v.shape[:i]) + (a,) + tuple(v.shape[i + 2:])
        mm = None
        if mshape is not None:
            mm = mshape[:i] + ((1,) if mshape[i] == 1 else (a * gq,)) + mshape[i + 2:]
        return mq, mk, mv, mm
    return None


def _attention_build(m):
    a = m._attention
    g = m.graph
    q = m["q_src"]
    k = m["k_src"] if m.has("k_src") else _swap_last2(m["kT"])
    v = m["v_src"]
    if "k" in a["perms"]:
        k = F.transpose(k, axes=a["perms"]["k"])
    if "v" in a["perms"]:
        v = F.transpose(v, axes=a["perms"]["v"])
    mask = None
    if a["bool_mask"]:
        mask = m["keep"] if m.has("keep") else _logical_not(m["drop"])
    elif a["masks"]:
        mask = m["mask0"]
        for i in range(1, a["masks"]):
            mask = F.add(mask, m[f"mask{i}"])
        if a["bool_additive"]:
            fill = m["fill"]
            mask = F.add(F.where(m["keep"], 0.0, fill) if m.has("keep")
                         else F.where(m["drop"], fill, 0.0), mask)
    out_shape = g.nodes[m.root].type.shape
    if a["how"] == "tile":
        # head h reads kv head h % Hkv: q, the mask and the output as [.., G, Hkv, ..]
        G = a["group"]
        ax = q.type.rank - 3
        H = q.type.shape[ax]
        mt = None if mask is None else \
            (1,) * (q.type.rank - mask.type.rank) + tuple(mask.type.shape)
        q = F.reshape(q, shape=_split(q.type.shape, ax, (G, H // G)))
        k = F.reshape(k, shape=_split(k.type.shape, ax, (1, k.type.shape[ax])))
        vt = v.type.shape
        v = F.reshape(v, shape=_split(vt, ax, (1, vt[ax]) if vt[ax] != H else (G, H // G)))
        if mask is not None:
            mask = F.reshape(mask, shape=_split(mt, ax, (1, 1) if mt[ax] == 1
                                                else (G, H // G)))
    else:
        merged = _merge_groups(q.type, k.type, v.type, mask.type if mask is not None
                               else None)
        while merged is not None:
            mq, mk, mv, mm = merged
            q, k, v = (F.reshape(x, shape=s) for x, s in ((q, mq), (k, mk), (v, mv)))
            if mask is not None:
                mask = F.reshape(mask, shape=mm)
            merged = _merge_groups(q.type, k.type, v.type, mask.type if mask is not None
                                   else None)
    operands = (q, k, v) if mask is None else (q, k, v, mask)
    out = F.attention(*operands, scale=a["scale"], causal=a["causal"], mask_fill=a["fill"],
                      softcap=a["softcap"])
    if tuple(out.type.shape) != tuple(out_shape):
        out = F.reshape(out, shape=out_shape)
    if m.has("nan_guard"):       # the rows of queries that see no key: 0, as the guard's
        zero = m["nan_fill"]
        out = F.where(F.isnan(out), zero, out)
    return out


register_rule(Rule("softmax(scale(q @ k^T) [+ mask]) @ v => attention", ATTENTION,
                   _attention_build, _attention_check))


# -- tanh-GELU written out => gelu(approximate="tanh") ---------------------------------
# 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), as torch decomposes
# gelu(approximate="tanh") (and so its ONNX exporter, and GPT-2's "gelu_new"): one op,
# which a GEMM then takes as its epilogue (gemm+gelu below).
def _factor(value, rel=1e-5):
    return lambda have, node, graph: isinstance(have, (int, float)) \
        and abs(have - value) <= rel * abs(value)


def _const_of(value):
    def check(graph, node):
        if node.op == "constant" and graph.constants[node.id].size == 1 \
                and float(graph.constants[node.id].reshape(())) == value:
            return None
        return f"{node.op} {node.type} is not the constant {value:g}"
    return check


_gx = Var("x")
_cube = Alt(Op("mul", Op("mul", _gx, _gx), _gx, commutative=True),
            Op("pow", _gx, Var("three", _const_of(3.0))))
_gelu_inner = Op("add", _gx, Op("scale", _cube, factor=_factor(0.044715)), commutative=True)
_gelu_tanh = Op("tanh", Op("scale", _gelu_inner, factor=_factor(math.sqrt(2 / math.pi))))
_one_plus = Op("add", _gelu_tanh, Var("one", _const_of(1.0)), commutative=True)


def _gelu_tanh_build(m):
    return F.gelu(m["x"], approximate="tanh")


register_rule(Rule("0.5x * (1 + tanh(c * (x + 0.044715 x^3))) => gelu_tanh",
                   Op("mul", Op("scale", _gx, factor=_factor(0.5)), _one_plus,
                      commutative=True), _gelu_tanh_build))
register_rule(Rule("0.5 * (x * (1 + tanh(c * (x + 0.044715 x^3)))) => gelu_tanh",
                   Op("scale", Op("mul", _gx, _one_plus, commutative=True),
                      factor=_factor(0.5)), _gelu_tanh_build))


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


def _gemm_act(act_of):
    def build(m):
        return F.gemm(m["x"], m["w"], m["b"], activation=act_of(m))
    return build


# An activation made by another rule after its GEMM was (the tanh-GELU above, found in
# the same sweep as the x @ w + b below it): the GEMM takes it as its epilogue.
_plain_gemm = Op("gemm", Var("x"), Var("w"), Var("b"), activation="none", name="mm")
register_rule(Rule("gelu(gemm(x, w, b)) => gemm+gelu", Op("gelu", _plain_gemm, name="act"),
                   _gemm_act(lambda m: "gelu" if m.node("act").attrs["approximate"] == "none"
                             else "gelu_tanh")))
register_rule(Rule("relu(gemm(x, w, b)) => gemm+relu", Op("relu", _plain_gemm),
                   _gemm_act(lambda m: "relu")))
register_rule(Rule("silu(gemm(x, w, b)) => gemm+silu", Op("silu", _plain_gemm),
                   _gemm_act(lambda m: "silu")))


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
