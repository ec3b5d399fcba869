"""DeepLIFT with the Rescale rule: f(x) − f(x′) shared out over the pixels (Shrikumar, Greenside & Kundaje 2017).

"Learning Important Features Through Propagating Activation Differences",
ICML 2017. Every unit is compared with its value on a reference image x′
(the ``baseline``): a linear layer passes differences back through its
weights (the linear rule: the gradient); an elementwise activation
z ↦ φ(z) passes them back with the multiplier Δφ / Δz = (φ(z) − φ(z′)) /
(z − z′) instead of its derivative (the Rescale rule; where |Δz| < 1e-10 the
derivative, as Captum). Multiplied by x − x′, the attributions add up to
f(x) − f(x′) exactly: the completeness gap reported per image and
objective (``convergence``) is a real check, as for Integrated Gradients.

How it runs, on the shared model, untouched (no hooks, no copy, no mode
change): one forward pass of x′ without gradients keeps each activation's
input in call order; then x runs with gradients, and each activation's k-th
call becomes a :class:`torch.autograd.Function` whose backward pass
multiplies by Δφ / Δz for the k-th input of x′. Both passes run under a
:class:`torch.overrides.TorchFunctionMode`, which sees the calls of
``nn.ReLU``/``ReLU6``/``Sigmoid``/``Tanh``/``SiLU``/``GELU``/... modules and
of the same functions called directly, and which is local to the calling
thread, so other users of the model are not affected. A reused activation
module is fine: calls are paired, not modules.

Elementwise products of two activations (squeeze-and-excitation gates) take
the plain gradient, as Captum does; the completeness gap shows what that
costs. Anything else the linear and Rescale rules do not cover is refused
with an InvalidInputError naming the operation and the layer: after the
forward pass, every node of the autograd graph that depends on the image
must be one of a list of linear operations or a paired activation, so
max-pooling, softmax and attention, layer and group norms, batch norm on
batch statistics, activations DeepLIFT cannot see (inside TorchScript, a
``torch.export`` graph, a custom autograd Function) and models that run
differently on x and x′ never give a map.

The loss objective is used as −L = log p_y. Its last step, from the logits
s to log softmax(s)_y, is not elementwise: its multipliers are the gradient
averaged along the straight line from s′ to s, e_y − ∫₀¹ softmax(s′ + α (s −
s′)) dα (the one-variable Rescale multiplier is exactly such an average),
by a 256-point Gauss–Legendre rule on the (N, C) logits, so the loss
attributions add up to log p_y(x) − log p_y(x′) too. (Captum's DeepLift on
``log_softmax(model(x))`` uses the gradient of log_softmax at x for that
step, which is not complete: for a confident prediction it is nearly zero.)
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from saliency_core.core.gradients import objective_per_image
from saliency_core.core.model_access import memory_format_of
from saliency_core.core.model_output import checked_forward
from saliency_core.core.precision import autocast_context, tf32_context
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import MethodOutput, Request, image_rows, make_baseline, resolve_targets
from saliency_core.methods.declaration import AttributionMethod, AttributionWarning, Passes, baseline_param
from saliency_core.methods.deeplift_graph import check_module, first_unsupported, refusal, why
from saliency_core.methods.integrated_gradients import GAP_WARNING

#: Below this |Δz| a unit's multiplier is its derivative at z (Captum's ``eps``).
EPS = 1e-10

# ---------------------------------------------------------------- the activations, and how to call them

def _inside(lo: float | None, hi: float | None, strict: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The derivative of a clamp to [lo, hi] as autograd takes it, as a bool tensor: inside (strictly, for
    hardtanh) or not."""
    def derivative(t: torch.Tensor) -> torch.Tensor:
        inside = None
        if lo is not None:
            inside = t > lo if strict else t >= lo
        if hi is not None:
            below = t < hi if strict else t <= hi
            inside = below if inside is None else inside.logical_and_(below)
        return torch.ones_like(t, dtype=torch.bool) if inside is None else inside
    return derivative


def _relu_derivative(t: torch.Tensor) -> torch.Tensor:
    return t > 0


def _sigmoid_derivative(t: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(t)
    return s * (1 - s)


def _tanh_derivative(t: torch.Tensor) -> torch.Tensor:
    return 1 - torch.tanh(t).square()


#: Functions that take one tensor and nothing else: func -> (the out-of-place function, its derivative, in place).
_UNARY: dict[Callable, tuple[Callable, Callable, bool]] = {}
for _name, _derivative in (("relu", _relu_derivative), ("sigmoid", _sigmoid_derivative), ("tanh", _tanh_derivative)):
    _base = getattr(torch, _name)
    _UNARY.update({_base: (_base, _derivative, False), getattr(torch.Tensor, _name): (_base, _derivative, False),
                   getattr(torch, _name + "_"): (_base, _derivative, True),
                   getattr(torch.Tensor, _name + "_"): (_base, _derivative, True)})
#: Functions of torch.nn.functional with parameters (slopes, bounds) and perhaps ``inplace``.
_KEYWORD = (F.relu, F.relu6, F.hardtanh, F.elu, F.leaky_relu, F.silu, F.gelu, F.softplus, F.hardswish,
            F.hardsigmoid, F.mish, F.selu, F.celu)
#: clamp(min, max) with number bounds is an activation too (hand-written ReLU6: ``x.clamp(0, 6)``).
_CLAMPS = {torch.clamp: False, torch.Tensor.clamp: False, torch.clip: False, torch.Tensor.clip: False,
           torch.Tensor.clamp_: True, torch.Tensor.clip_: True, torch.clamp_: True}
_SIGNATURES: dict[Callable, inspect.Signature | None] = {}


def _signature(func: Callable) -> inspect.Signature | None:
    if func not in _SIGNATURES:
        try:
            _SIGNATURES[func] = inspect.signature(func)
        except (TypeError, ValueError):  # a builtin (gelu, softplus): no ``inplace`` to find
            _SIGNATURES[func] = None
    return _SIGNATURES[func]


class _Call(NamedTuple):
    """An elementwise activation call: its input z, φ as a function of one tensor, φ' where it has a closed
    form (a float or bool tensor; None: autograd's, taken where needed), and whether it was asked in place."""

    z: torch.Tensor
    phi: Callable[[torch.Tensor], torch.Tensor]
    derivative: Callable[[torch.Tensor], torch.Tensor] | None
    inplace: bool


def _activation(func: Callable, args: tuple, kwargs: dict) -> _Call | None:
    """The call as a :class:`_Call` when ``func`` is an elementwise activation, else None."""
    if func in _UNARY:
        base, derivative, inplace = _UNARY[func]
        return _Call(args[0], base, derivative, inplace)
    if func in _CLAMPS:
        bounds = dict(zip(("min", "max"), args[1:], strict=False)) | kwargs
        if any(b is not None and not isinstance(b, (int, float)) for b in bounds.values()):
            return None  # tensor bounds: not elementwise in z alone
        lo, hi = bounds.get("min"), bounds.get("max")
        return _Call(args[0], lambda t: torch.clamp(t, lo, hi), _inside(lo, hi, strict=False), _CLAMPS[func])
    if func not in _KEYWORD:
        return None
    sig = _signature(func)
    if sig is None:
        return _Call(args[0], lambda t: func(t, *args[1:], **kwargs), None, False)
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    inplace = bool(bound.arguments.pop("inplace", False))
    z = bound.arguments.pop("input")
    rest = dict(bound.arguments)
    derivative = None
    if func is F.relu:
        derivative = _relu_derivative
    elif func is F.relu6:
        derivative = _inside(0.0, 6.0, strict=True)
    elif func is F.hardtanh:
        derivative = _inside(rest["min_val"], rest["max_val"], strict=True)
    elif func is F.leaky_relu:
        slope = rest["negative_slope"]
        derivative = lambda t: torch.where(t > 0, 1.0, slope)  # noqa: E731
    return _Call(z, lambda t: func(t, **rest), derivative, inplace)


def _multiplier(z: torch.Tensor, ref: torch.Tensor, out: torch.Tensor, call: _Call) -> torch.Tensor:
    """Δφ / Δz elementwise, computed in float32 or wider, returned in z's dtype. Where |Δz| < EPS, φ's own
    derivative at z (what autograd would use, as Captum): units whose input is the same on the image and on
    the baseline (channels whose weights are all zero) are common, so the derivative is a closed form where
    φ has one, else autograd's on those elements only."""
    work = torch.promote_types(z.dtype, torch.float32)
    dz = z.to(work) - ref.to(work)
    m = call.phi(ref).to(work)
    torch.sub(out.to(work), m, out=m)
    m.div_(dz)
    small = dz.abs_() < EPS
    if bool(small.any()):
        if call.derivative is not None:
            m = torch.where(small, call.derivative(z), m)  # a bool derivative is promoted: no copy
        else:
            with torch.enable_grad():
                t = z[small].detach().requires_grad_(True)
                (derivative,) = torch.autograd.grad(call.phi(t).sum(), t)
            m[small] = derivative.to(work)
    return m.to(z.dtype)


class _Rescale(torch.autograd.Function):
    """φ(z) forward; grad · Δφ / Δz backward (z′ the reference's input of the same call)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, ref: torch.Tensor, call: _Call) -> torch.Tensor:  # type: ignore[override]
        out = call.phi(z)
        ctx.save_for_backward(_multiplier(z, ref, out, call))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (m,) = ctx.saved_tensors
        return grad * m, None, None


class _RescaleInPlace(torch.autograd.Function):
    """The same, for an activation asked in place (``nn.ReLU(inplace=True)``): z is overwritten with φ(z)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, ref: torch.Tensor, call: _Call) -> torch.Tensor:  # type: ignore[override]
        out = call.phi(z)
        ctx.save_for_backward(_multiplier(z, ref, out, call))
        z.copy_(out)
        ctx.mark_dirty(z)
        return z

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (m,) = ctx.saved_tensors
        return grad * m, None, None




# ---------------------------------------------------------------- the two passes

class _Pairing(TorchFunctionMode):
    """A forward pass with DeepLIFT's activations: recording (``refs`` None: x′'s pass, each activation's input
    kept in call order) or replaying (x's pass: the k-th activation call paired with x′'s k-th input).

    ``locate``: also note which function and layer made each autograd node (``where``), for a refusal's message.
    """

    def __init__(self, module: torch.nn.Module, refs: list | None = None, locate: bool = False) -> None:
        super().__init__()
        self.module, self.recording, self.locate = module, refs is None, locate
        self.refs: list = [] if refs is None else refs
        self.calls = 0
        self.where: dict = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = self._call(func, args, kwargs)
        if self.locate:
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.grad_fn is not None and t.grad_fn not in self.where:
                    self.where[t.grad_fn] = (getattr(func, "__name__", str(func)), _calling_layer(self.module))
        return out

    def _call(self, func, args, kwargs):
        if func is F.batch_norm:
            bound = _signature(func).bind(*args, **kwargs).arguments
            if bound.get("training") or bound.get("running_mean") is None:
                raise refusal("batch_norm on the batch's own statistics", _calling_layer(self.module),
                               "it mixes the images of a batch (track_running_stats=False, or training mode)")
        call = _activation(func, args, kwargs)
        if call is None or not isinstance(call.z, torch.Tensor) or not call.z.is_floating_point():
            return func(*args, **kwargs)
        z = call.z
        k, self.calls = self.calls, self.calls + 1
        if self.recording:
            kept = z.detach().clone() if call.inplace else z.detach()
            self.refs.append((func, kept, kept._version))
            return func(*args, **kwargs)
        if k >= len(self.refs) or self.refs[k][0] is not func or self.refs[k][1].shape != z.shape:
            raise _differs()
        _, ref, version = self.refs[k]
        if ref._version != version:
            raise _differs("it changed an activation's input in place after the activation")
        self.refs[k] = None  # x′'s input is not needed again: free it as the pass goes
        return (_RescaleInPlace if call.inplace else _Rescale).apply(z, ref, call)

    def finish(self) -> None:
        if self.calls != len(self.refs):
            raise _differs()


def _differs(what: str = "") -> InvalidInputError:
    return InvalidInputError(
        "DeepLIFT needs the model to run the same activations on the image and on the baseline, in the same "
        f"order; this one did not ({what or 'its control flow depends on the input'}). Use another method.")


def _calling_layer(model: torch.nn.Module) -> str:
    """The innermost layer of ``model`` whose ``forward`` is on the call stack, as "layer 'name' (Class)"."""
    names = {id(m): name for name, m in model.named_modules()}
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self") if frame.f_code.co_name == "forward" else None
        if isinstance(owner, torch.nn.Module) and id(owner) in names:
            name = names[id(owner)]
            return f"layer '{name}' ({type(owner).__name__})" if name else f"the model ({type(owner).__name__})"
        frame = frame.f_back
    return "the model"


# ---------------------------------------------------------------- the objective's last step

_PANELS, _NODES = 16, 16


def mean_softmax(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """(N, C) ∫₀¹ softmax(s′ + α (s − s′)) dα, float64, by composite Gauss–Legendre (16 panels of 16 points):
    the average gradient of log-sum-exp along the straight line from the reference's logits to the image's."""
    nodes, weights = np.polynomial.legendre.leggauss(_NODES)
    s, s_ref = logits.double(), ref_logits.double()
    delta = s - s_ref
    total = torch.zeros_like(s)
    for panel in range(_PANELS):
        alphas = torch.tensor((panel + (nodes + 1) / 2) / _PANELS, dtype=torch.float64, device=s.device)
        w = torch.tensor(weights / 2 / _PANELS, dtype=torch.float64, device=s.device)
        total += (w.view(-1, 1, 1) * torch.softmax(s_ref + alphas.view(-1, 1, 1) * delta, dim=-1)).sum(dim=0)
    return total


def output_multipliers(objective: str, logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor,
                       loss_sign: int) -> torch.Tensor:
    """(N, C) the multipliers of the logits: e_y for the score; for the loss, ``loss_sign`` × (mean softmax − e_y)
    (−1: log p_y), whose products with s − s′ add up to the change of the objective."""
    onehot = F.one_hot(targets, logits.shape[1]).to(torch.float64)
    if objective == "score":
        return onehot.to(logits.dtype)
    return (loss_sign * (mean_softmax(logits, ref_logits) - onehot)).to(logits.dtype)


# ---------------------------------------------------------------- the method

def passes(**_params: object) -> Passes:
    """Per image: the baseline's forward pass (its activations), then the image's with the gradients."""
    return Passes(gradient=1, forward=1)


def _paired_forward(req: Request, x: torch.Tensor, ref: torch.Tensor, locate: bool = False):
    """x′'s pass (no gradients, activations kept), then x's with the Rescale rule: (logits of x in the graph,
    logits of x′, the leaf x, the replay's ``where``). Call under ``tf32_context`` and outside inference mode."""
    recorded = _Pairing(req.module)
    with torch.no_grad(), autocast_context(req.device, req.precision), recorded:
        ref_logits = checked_forward(req.module, ref, req.check).to(req.dtype)
    leaf = x.detach().clone().requires_grad_(True)
    replay = _Pairing(req.module, recorded.refs, locate=locate)
    with torch.enable_grad(), autocast_context(req.device, req.precision), replay:
        logits = checked_forward(req.module, leaf, req.check).to(req.dtype)
    replay.finish()
    return logits, ref_logits, leaf, replay.where


def _maker(root, node, makers: dict) -> tuple[str, str] | None:
    """The function and layer that made ``node``, or failing that (a node made inside a function the mode
    handed on whole, such as attention's), made the nearest node above it: a breadth-first walk down from
    ``root`` keeps each node's first parent, and the walk back up stops at the first known maker."""
    parents = {root: None}
    queue = [root]
    while queue and node not in parents:
        current = queue.pop(0)
        for child, _ in current.next_functions:
            if child is not None and child not in parents:
                parents[child] = current
                queue.append(child)
    while node is not None and node not in makers:
        node = parents.get(node)
    return makers.get(node) if node is not None else None


def _refuse(req: Request, x: torch.Tensor, ref: torch.Tensor, node) -> InvalidInputError:
    """The refusal for an unsupported graph node, naming the function and layer that made it: found by running
    the first image's two passes again, noting every node's maker."""
    name = type(node).__name__
    op, where = name.removesuffix("Backward0").lower(), "the model"
    with torch.enable_grad():
        logits, _, leaf, makers = _paired_forward(req, x[:1], ref[:1], locate=True)
        again = first_unsupported(logits, leaf)
    found = _maker(logits.grad_fn, again, makers) if again is not None else None
    if found is not None:
        op, where = found
    return refusal(f"{op} ({name})", where, why(name))


def run(req: Request, baseline: str | torch.Tensor = "black") -> MethodOutput:
    """attributions[obj] = (x − x′) ⊙ the Rescale-rule multipliers of f = s_y or −L; (N, 3, H, W) signed."""
    check_module(req.module)
    reference, used = make_baseline(req, baseline)
    fmt = memory_format_of(req.module)
    ref_parts: list[torch.Tensor] = []

    def step(start: int, stop: int):
        x = req.X[start:stop].detach().to(device=req.device, dtype=req.dtype).contiguous(memory_format=fmt)
        ref = reference[start:stop].contiguous(memory_format=fmt)
        with torch.inference_mode(False), tf32_context(req.device, req.precision):
            logits, ref_logits, leaf, _ = _paired_forward(req, x, ref)
            if (node := first_unsupported(logits, leaf)) is not None:
                raise _refuse(req, x, ref, node)
            targets = resolve_targets(logits.detach(), req.y[start:stop])
            grads = {}
            for i, obj in enumerate(req.objectives):
                v = output_multipliers(obj, logits.detach(), ref_logits, targets, req.loss_sign)
                (g,) = torch.autograd.grad(logits, leaf, grad_outputs=v, retain_graph=i < len(req.objectives) - 1)
                grads[obj] = (x - ref) * g
        ref_parts.append(ref_logits)  # only once the chunk succeeded (a chunk is retried on out-of-memory)
        return logits.detach(), targets, grads

    logits, targets, attributions = image_rows(req, step)
    ref_logits = torch.cat(ref_parts)
    convergence = {}
    for obj, a in attributions.items():
        change = (objective_per_image(logits, targets, obj, req.loss_sign)
                  - objective_per_image(ref_logits, targets, obj, req.loss_sign))
        convergence[obj] = (a.sum(dim=(1, 2, 3)) - change) / change.abs().clamp_min(1e-12)
        worst = float(convergence[obj].abs().max())
        if worst > GAP_WARNING:
            warnings.warn(
                f"DeepLIFT ({obj}): the attributions miss f(x) - f(x') by {worst:.0%} of it for at least one "
                "image: the model multiplies activations together (e.g. squeeze-and-excitation gates, which "
                "take the plain gradient, as in Captum) or mixes the images of a batch", AttributionWarning,
                stacklevel=3)
    return MethodOutput(attributions=attributions, logits=logits, targets=targets, convergence=convergence,
                        used=used)


METHOD = AttributionMethod(
    name="deeplift", title="DeepLIFT", citation="Shrikumar, Greenside & Kundaje 2017",
    summary="f(x) − f(x′) shared out by the Rescale rule: each activation passes back Δoutput / Δinput; "
            "the loss as −L",
    params=(baseline_param("black"),),
    loss_objective="-L", output="input", run=run, passes=passes, default_view=False,
    needs=frozenset({"baseline", "deeplift_layers"}), family="reference",
    gap_note="the model multiplies activations together, which take the plain gradient",
)
