"""The ``torch.compile`` backend: ``torch.compile(model, backend="graphc")`` (registered
through the ``torch_dynamo_backends`` entry point) or
``backend=graphc.torch_backend(backend="numba", level="O2")``.

Dynamo hands over each FX subgraph between graph breaks; AOTAutograd (inference mode)
turns it into core ATen (scaled dot-product attention kept whole) and graphc translates
and compiles that once: its SymInt sizes are graphc symbols, so with ``dynamic=True`` a
new sequence length runs the same executable. Torch tensors in and out, without copies
for contiguous CPU float32 / float64 (``.numpy()`` / ``torch.from_numpy``).

A graph one of whose sizes is no polynomial of the dynamic dims (a strided convolution
over a dynamic audio length: floor((L - k) / s) + 1) cannot be one symbolic executable:
it is compiled once per distinct input size instead (the FX graph re-traced with the
call's real tensors, static), with a warning that says so and why."""
from __future__ import annotations

import warnings

import numpy as np

from .errors import InferenceOnlyError, NonPolynomialDimError, TorchImportError

_COUNT = [0]


def make_backend(backend: str = "numba", level: str = "O2", **options):
    def graphc_backend(gm, example_inputs):
        import torch
        if torch.is_grad_enabled():
            needs = [k for k, x in enumerate(example_inputs)
                     if isinstance(x, torch.Tensor) and x.requires_grad]
            if needs:
                raise InferenceOnlyError(
                    f"torch.compile(backend='graphc') compiles inference only: this graph "
                    f"needs autograd ({len(needs)} of its inputs require grad, e.g. the "
                    f"model's parameters, and grad mode is on). Run the compiled model under "
                    f"torch.no_grad() or torch.inference_mode(), or use another backend to "
                    f"train")
        from torch._dynamo.backends.common import aot_autograd

        from .importer import decomposition_table

        def forward_compiler(fx, fx_inputs):
            from torch._subclasses.fake_tensor import unset_fake_temporarily
            with unset_fake_temporarily():       # constants are read as real tensors
                return compile_fx(fx, backend, level, options)

        return aot_autograd(fw_compiler=forward_compiler,
                            decompositions=decomposition_table())(gm, example_inputs)

    graphc_backend.__name__ = f"graphc_{backend}_{level}"
    return graphc_backend


def compile_fx(fx, backend, level, options):
    """An ATen FX graph -> a callable of torch tensors (the placeholders' order)."""
    import torch

    from ...api import compile as graphc_compile
    from .importer import translate_graph
    _COUNT[0] += 1
    kinds = []
    for n in fx.graph.nodes:
        if n.op == "placeholder":
            kinds.append(isinstance(n.meta.get("val"), torch.Tensor))
    name = f"torch_compile_{_COUNT[0]}"
    try:
        graph = translate_graph(fx, name, where="the torch.compile graph")
    except NonPolynomialDimError as e:
        warnings.warn(f"graphc compiles {name} once per input size: {e.message}",
                      stacklevel=2)
        return PerSizeRunner(fx, name, kinds, backend, level, options)
    exe = graphc_compile(graph, backend=backend, level=level, **options)
    return Runner(exe, kinds)


def _flat(args, n):
    """The call's arguments: AOTAutograd passes them as one list (boxed), dynamo spread."""
    if len(args) == 1 and isinstance(args[0], list) and n != 1:
        return args[0]
    return args


class PerSizeRunner:
    """A graph with a non-polynomial size: per distinct (input shapes, int arguments) the
    FX graph is traced again with the call's real tensors (make_fx: every size static)
    and compiled; later calls of that size reuse it."""

    def __init__(self, fx, name, kinds, backend, level, options):
        self.fx, self.name, self.kinds = fx, name, kinds
        self.backend, self.level, self.options = backend, level, options
        self.runners: dict = {}

    def __call__(self, *args):
        args = _flat(args, len(self.kinds))
        key = tuple(tuple(a.shape) if t else int(a) for t, a in zip(self.kinds, args))
        run = self.runners.get(key)
        if run is None:
            import torch
            from torch.fx.experimental.proxy_tensor import make_fx

            from ...api import compile as graphc_compile
            from .importer import translate_graph
            tensors = [a for t, a in zip(self.kinds, args) if t]
            sizes = [int(a) for t, a in zip(self.kinds, args) if not t]

            def static(*ts):
                it_t, it_s = iter(ts), iter(sizes)
                return self.fx(*[next(it_t) if t else next(it_s) for t in self.kinds])

            with torch.no_grad():
                traced = make_fx(static, tracing_mode="real")(*tensors)
            traced.graph.eliminate_dead_code()      # the outputs autograd would read
            traced.recompile()
            graph = translate_graph(traced, f"{self.name}_{len(self.runners)}",
                                    where="the torch.compile graph")
            exe = graphc_compile(graph, backend=self.backend, level=self.level,
                                 **self.options)
            run = self.runners[key] = Runner(exe, [True] * len(tensors))
        return run(*[a for t, a in zip(self.kinds, args) if t])


class Runner:
    """Calls a graphc executable with torch tensors: the tensor arguments (sizes are known
    from their shapes) as NumPy views, the outputs as torch tensors sharing the arrays."""

    def __init__(self, exe, tensor_args):
        self.exe = exe
        self.tensor_args = tensor_args

    def __call__(self, *args):
        import torch
        args = _flat(args, len(self.tensor_args))
        arrays = []
        for is_t, a in zip(self.tensor_args, args):
            if not is_t:
                continue
            if a.device.type != "cpu":
                raise TorchImportError(f"a {a.device} tensor: torch.compile(backend='graphc') "
                                       f"takes CPU tensors (graphc's cupy backend takes NumPy "
                                       f"arrays)")
            a = a.detach()
            arrays.append(a.numpy() if a.is_contiguous() else np.ascontiguousarray(a.numpy()))
        outs = self.exe(*arrays)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return [torch.from_numpy(np.asarray(o)) for o in outs]


def graphc(gm, example_inputs):
    """The registered ``"graphc"`` backend: numba, O2."""
    return make_backend()(gm, example_inputs)
