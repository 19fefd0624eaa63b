"""Rewrite rules are values: RuleSets combine with ``+`` and any pass can apply one."""
import numpy as np
import pytest

import graphc
from graphc.passes import (Explain, RuleSet, apply_rules, fusion_rules, optimize,
                           register_pass, unregister_pass)
from graphc.passes.patterns import (Op, Rule, Var, all_rules, register_rule,
                                    unregister_rule)
from graphc.passes.simplify import RULES as SIMPLIFY

NEG_NEG = Rule("-(-x) => x", Op("neg", Op("neg", Var("x"))), lambda m: m["x"])
EXP_LOG = Rule("exp(log(x)) => x", Op("exp", Op("log", Var("x"))), lambda m: m["x"])


def ops_of(g):
    return [n.op for n in g if n.op not in ("input", "constant")]


def test_rule_sets_add_like_pattern_matchers():
    mine = NEG_NEG + EXP_LOG
    assert isinstance(mine, RuleSet) and mine.names == ["-(-x) => x", "exp(log(x)) => x"]
    both = SIMPLIFY + mine
    assert both.names == SIMPLIFY.names + mine.names
    assert len(SIMPLIFY + mine + NEG_NEG) == len(both)          # the same rule once
    assert "-(-x) => x" in both and both["-(-x) => x"] is NEG_NEG
    assert sum([RuleSet([NEG_NEG]), RuleSet([EXP_LOG])], RuleSet()).names == mine.names
    assert both.without("-(-x) => x").names == SIMPLIFY.names + ["exp(log(x)) => x"]
    with pytest.raises(graphc.RegistrationError, match="two different rules"):
        mine + Rule("-(-x) => x", Op("neg", Var("x")), lambda m: m["x"])
    with pytest.raises(TypeError):
        RuleSet(["not a rule"])


def test_any_pass_applies_a_combined_set(same_result):
    @register_pass("planted_algebra")
    def algebra(graph):
        apply_rules(graph, SIMPLIFY + NEG_NEG + EXP_LOG, consumers_first=False)
        return graph
    try:
        def fn(x):
            return graphc.relu(graphc.neg(graphc.neg(graphc.exp(graphc.log(x * 1.0)))))
        g = graphc.trace(fn, graphc.spec((4, 3), "float64"))
        ex = Explain()
        out = optimize(g, ["planted_algebra", "dce"], instruments=[ex])
        assert ops_of(out) == ["relu"]
        fired = [e["rule"] for e in ex.fired()]
        assert fired.count("-(-x) => x") == 1 and fired.count("exp(log(x)) => x") == 1
        x = np.abs(np.random.default_rng(0).standard_normal((4, 3))) + 0.1
        np.testing.assert_allclose(graphc.compile(out, level="O0")(x), np.maximum(x, 0))
    finally:
        unregister_pass("planted_algebra")


def test_apply_returns_the_count_and_reports_misses():
    g = graphc.trace(lambda x: graphc.neg(graphc.neg(graphc.neg(x))), graphc.spec((3,)))
    ex = Explain()

    @register_pass("planted_negs")
    def negs(graph):
        graph.meta["fired"] = apply_rules(graph, NEG_NEG)
        return graph
    try:
        out = optimize(g, ["planted_negs"], instruments=[ex])
    finally:
        unregister_pass("planted_negs")
    assert out.meta["fired"] == 1 and ops_of(out) == ["neg"]
    assert any(e["rule"] == "-(-x) => x" and "expected neg" in e["reason"]
               for e in ex.missed())


def test_fuse_patterns_applies_the_registered_set():
    assert fusion_rules().names == [r.name for r in all_rules()]
    assert "softmax(scale(q @ k^T) [+ mask]) @ v => attention" in fusion_rules()
    register_rule(NEG_NEG)
    try:
        assert "-(-x) => x" in fusion_rules()
        g = graphc.trace(lambda x: graphc.exp(graphc.neg(graphc.neg(x))), graphc.spec((3,)))
        assert ops_of(optimize(g, ["fuse_patterns"])) == ["exp"]
        NEG_NEG.enabled = False                       # a disabled rule is not applied
        assert ops_of(optimize(g, ["fuse_patterns"])) == ["neg", "neg", "exp"]
    finally:
        NEG_NEG.enabled = True
        unregister_rule("-(-x) => x")
    assert "-(-x) => x" not in fusion_rules()
