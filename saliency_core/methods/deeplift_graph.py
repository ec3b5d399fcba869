"""What DeepLIFT (:mod:`saliency_core.methods.deeplift`) can explain: the autograd graph it may hold.

DeepLIFT's Rescale rule covers elementwise activations and layers linear in the image; anything else in the
graph between the image and the logits (max-pooling, normalisation by the input's own statistics, products of
two activations as in attention, layers compiled into TorchScript) would give a wrong map, so it is refused
here, by name, before a map is made.
"""

from __future__ import annotations

import torch

from saliency_core.errors import InvalidInputError

#: The autograd nodes of DeepLIFT's own Rescale functions (their classes' names, "Backward" appended).
RESCALE_NODES = frozenset({"_RescaleBackward", "_RescaleInPlaceBackward"})


def refusal(op: str, where: str, why: str) -> InvalidInputError:
    return InvalidInputError(f"DeepLIFT has no rule for {op} in {where}: {why}. It explains models of "
                             "convolutions, linear layers, eval-mode batch norm, average pooling and elementwise "
                             "activations; use another method for this one.")


# ---------------------------------------------------------------- what the graph may hold

#: Autograd nodes that are linear in the image (with the other operands fixed): node -> the operands that may
#: depend on the image together (None: any). Matrix products with both sides from the image are attention.
LINEAR: dict[str, tuple[frozenset[int], ...] | None] = {
    **dict.fromkeys((
        "AddBackward0", "AddBackward1", "SubBackward0", "SubBackward1", "RsubBackward0", "RsubBackward1",
        "NegBackward0", "MulBackward1", "DivBackward1", "ViewBackward0", "UnsafeViewBackward0",
        "ReshapeAliasBackward0", "PermuteBackward0", "TransposeBackward0", "TransposeBackward1", "TBackward0",
        "ExpandBackward0", "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2", "SqueezeBackward3",
        "SqueezeBackward4", "UnsqueezeBackward0", "CloneBackward0", "ToCopyBackward0", "AliasBackward0",
        "CatBackward0", "StackBackward0", "SliceBackward0", "SelectBackward0", "SplitBackward0",
        "SplitWithSizesBackward0", "UnbindBackward0", "IndexBackward0", "ConstantPadNdBackward0",
        "ReflectionPad1DBackward0", "ReflectionPad2DBackward0", "ReplicationPad2DBackward0", "MeanBackward0",
        "MeanBackward1", "SumBackward0", "SumBackward1", "AvgPool1DBackward0", "AvgPool2DBackward0",
        "AdaptiveAvgPool1DBackward0", "AdaptiveAvgPool2DBackward0", "UpsampleNearest2DBackward0",
        "UpsampleBilinear2DBackward0", "PixelShuffleBackward0", "PixelUnshuffleBackward0", "FlipBackward0",
        "RollBackward0", "RepeatBackward0", "AsStridedBackward0", "AsStridedBackward1", "IndexSelectBackward0",
        "GatherBackward0", "AvgPool3DBackward0", "AdaptiveAvgPool3DBackward0", "AccumulateGrad",
        "MulBackward0",  # a product of two activations: the plain gradient, as Captum (see the module's text)
    ), None),
    **dict.fromkeys(("ConvolutionBackward0", "DivBackward0", "NativeBatchNormBackward0",
                     "CudnnBatchNormBackward0", "MiopenBatchNormBackward0"), (frozenset({0}),)),
    **dict.fromkeys(("MmBackward0", "BmmBackward0"), (frozenset({0}), frozenset({1}))),
    "AddmmBackward0": (frozenset({0, 1}), frozenset({0, 2})),
}
ACTIVATION_NODES = ("Relu", "Hardtanh", "Sigmoid", "Tanh", "Silu", "Gelu", "Elu", "LeakyRelu", "Softplus",
                     "Hardswish", "Hardsigmoid", "Mish", "Clamp", "Threshold")


def why(node: str) -> str:
    if "MaxPool" in node or "Max" in node or "Amax" in node:
        return "max-pooling needs a rule of its own, which this implementation does not have"
    if "Softmax" in node or "Attention" in node or "mm" in node.lower():
        return "softmax and products of two activations (attention) have no Rescale rule"
    if "Norm" in node:
        return "normalising by the input's own statistics is not a linear layer"
    if node.startswith(ACTIVATION_NODES):
        return ("it is an activation DeepLIFT could not see to pair with the baseline's (it ran inside TorchScript, "
                "a torch.export graph or a custom autograd Function)")
    return "it is neither a linear layer nor an elementwise activation"


def image_dependent(root, x: torch.Tensor) -> dict:
    """node -> whether it depends on ``x``, for every node of the graph below ``root`` (iteratively: deep nets)."""
    depends: dict = {}
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            depends[node] = (getattr(node, "variable", None) is x
                             or any(depends.get(c, False) for c, _ in node.next_functions if c is not None))
        elif node not in depends:
            depends[node] = False
            stack.append((node, True))
            stack.extend((c, False) for c, _ in node.next_functions if c is not None and c not in depends)
    return depends


def first_unsupported(logits: torch.Tensor, x: torch.Tensor):
    """The first node of the graph that depends on ``x`` and that no rule covers, or None."""
    depends = image_dependent(logits.grad_fn, x)
    for node, dep in depends.items():
        if not dep:
            continue
        name = type(node).__name__
        if name in RESCALE_NODES:
            continue
        if name not in LINEAR:
            return node
        allowed = LINEAR[name]
        if allowed is not None:
            used = frozenset(i for i, (c, _) in enumerate(node.next_functions) if c is not None and depends.get(c))
            if not any(used <= a for a in allowed):
                return node
    return None


def check_module(module: torch.nn.Module) -> None:
    """InvalidInputError for a model DeepLIFT cannot see inside at all: TorchScript runs its layers compiled."""
    for name, m in module.named_modules():
        if isinstance(m, torch.jit.ScriptModule):
            raise refusal(f"compiled TorchScript ({name or type(m).__name__})", "the model",
                           "its layers run inside the compiled graph, where DeepLIFT's rules cannot reach")
