"""Score-CAM: each feature map weighed by the score of the image masked with it; forward passes only.

Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu, "Score-CAM: Score-Weighted
Visual Explanations for Convolutional Neural Networks", CVPR Workshops 2020
(their Algorithm 1): each channel A^k of the layer's (N, K, h, w) output is
upsampled to the input (bilinear, ``align_corners=False`` as their code) and
min-max normalised to [0, 1], giving a mask H^k (0 for a flat channel); one
forward pass of each masked copy X ∘ H^k gives f(X ∘ H^k), and

``α = softmax_k f(X ∘ H^k)``, ``CAM = ReLU(Σ_k α_k A^k)``,

upsampled to the input as every CAM (:mod:`saliency_core.methods.cam_layer`).
(The paper's "increase of confidence" f(X ∘ H^k) − f(X_b) shifts every f
by one amount, which the softmax ignores.) f = s_y for the score; for the
loss, −L = log p_y, so that α_k = p_y(X ∘ H^k) / Σ_j p_y(X ∘ H^j). Both come
from the same forward passes.

``channels`` caps the masked copies per image: the image's ``channels``
feature maps that vary most over positions (spatial variance; a nearly flat
map masks nearly the whole image or nothing, like its neighbours) — the idea
of "Faster Score-CAM" listed in the authors' repository. The softmax then
runs over the chosen channels, and the others weigh 0, where the paper uses
every channel. That can change the map a lot: at EfficientNet-Lite0's last
block the paper's weights are nearly even (the largest 0.005–0.02 of 320,
against 1/320 = 0.003), so its map is the positive part of a near-average
of every signed feature map, and a subset averages others. On the five
bundled photos the default 64 channels' maps agree with the paper's at
Pearson r 0.36–0.99 (score) and 0.22–0.98 (loss), 128 channels' at
0.72–1.00 (benchmarks/RESULTS.md). ``channels`` at or above K (the layer's
channel count, e.g. 320 for EfficientNet-Lite0's last block, 2048 for
ResNet-50's) is the paper's setting. The masked copies of all the images go through the model
in chunks as large as ``max_batch`` and the forward-only memory budget allow
(:func:`saliency_core.core.passes.run_in_chunks`), on a CPU at most
:data:`CPU_ROWS_PER_PASS`; progress is reported per chunk, in rows (the
images' own passes, then their masked copies).
"""

from __future__ import annotations

import torch

from saliency_core.core.gradients import objective_per_image, resolve_targets
from saliency_core.core.model_access import memory_format_of
from saliency_core.core.model_output import checked_forward
from saliency_core.core.passes import run_in_chunks
from saliency_core.core.precision import precision_context
from saliency_core.methods._common import MethodOutput, Request
from saliency_core.methods.cam_layer import LAYER_PARAM, activations, resolve_layer, upsample
from saliency_core.methods.declaration import AttributionMethod, Param, Passes

TITLE = "Score-CAM"
#: The default cap on masked copies per image: both maps of one 224 px image on EfficientNet-Lite0 (320 channels
#: at its last block) took 7.1–10 s on the 2-core CPU at a load of 15–22 (32: 4.3–4.6 s; 128: 16 s), and agree
#: with the paper's every-channel maps better than 32 do (benchmarks/RESULTS.md).
DEFAULT_CHANNELS = 64
#: The most a control or option takes: every channel of the widest registered layer (ResNet-50's layer4).
MAX_CHANNELS = 2048
#: Masked copies per pass at most on a CPU, below max_batch and the memory budget: on the 2-core CPU, both maps
#: of one image with 32 copies took 6.0 s in chunks of 8, 6.6 s in 16 and 8.3 s in 33 (median of 4, interleaved;
#: large chunks' activations fall out of the caches). CUDA takes the largest chunk the budget allows.
CPU_ROWS_PER_PASS = 8


def passes(channels: int = DEFAULT_CHANNELS, **_params: object) -> Passes:
    """Per image: its own forward pass (the activation, the target), then one per masked copy (at most
    ``channels``: fewer where the layer has fewer). No gradients."""
    return Passes(gradient=0, forward=1 + channels)


def chosen_channels(a: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, k) int64: per image, the k = min(channels, K) channels of ``a`` (N, K, h, w) with the largest
    spatial variance, largest first (ties: the lower index first); all K, in order, when channels >= K."""
    n, k_all = a.shape[:2]
    if channels >= k_all:
        return torch.arange(k_all, device=a.device).expand(n, k_all)
    spread = a.flatten(2).var(dim=2, unbiased=False)
    return spread.argsort(dim=1, descending=True, stable=True)[:, :channels]


def masks(coarse: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(R, 1, H, W) in [0, 1]: each (R, 1, h, w) map upsampled and min-max normalised; 0 where it is flat."""
    up = upsample(coarse, size)
    lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (up - lo) / torch.where(span > 0, span, 1), 0)


def run(req: Request, layer: str | None = None, channels: int = DEFAULT_CHANNELS) -> MethodOutput:
    """attributions[obj] = Score-CAM of f = s_y or −L at ``layer``, with at most ``channels`` masked copies
    per image; (N, 1, H, W) >= 0."""
    layer, wrapped = resolve_layer(req, layer, TITLE)
    size = tuple(req.X.shape[2:])
    x = req.x()
    fmt = memory_format_of(req.module)
    logit_parts, act_parts = [], []
    total = None
    for _, stop, (logits, a) in run_in_chunks(req.n, req.max_batch, req.device,
                                              lambda b, e: activations(req, wrapped, layer, TITLE, x[b:e]),
                                              input_row_bytes=req.row_bytes, backward=False):
        logit_parts.append(logits)
        act_parts.append(a)
        total = total or req.n * (1 + min(channels, a.shape[1]))
        req.report(stop, total)
    logits, a = torch.cat(logit_parts), torch.cat(act_parts)
    targets = resolve_targets(logits, req.y)
    chosen = chosen_channels(a, channels)  # (N, k)
    k = chosen.shape[1]
    rows = req.n * k
    f = {obj: torch.empty(rows, device=req.device, dtype=req.dtype) for obj in req.objectives}

    def step(start: int, stop: int) -> torch.Tensor:
        r = torch.arange(start, stop, device=req.device)
        n, c = r // k, chosen[r // k, r % k]
        masked = (x[n] * masks(a[n, c].unsqueeze(1), size)).contiguous(memory_format=fmt)
        with torch.no_grad(), precision_context(req.device, req.precision):
            return checked_forward(req.module, masked, req.check).to(req.dtype)

    chunk = min(req.max_batch or CPU_ROWS_PER_PASS, CPU_ROWS_PER_PASS) if req.device.type == "cpu" else req.max_batch
    for start, stop, masked_logits in run_in_chunks(rows, chunk, req.device, step, input_row_bytes=req.row_bytes,
                                                    backward=False):
        row_targets = targets[torch.arange(start, stop, device=req.device) // k]
        for obj in req.objectives:  # log p_y for the loss, as declared (loss_sign -1)
            f[obj][start:stop] = objective_per_image(masked_logits, row_targets, obj, req.loss_sign)
        req.report(req.n + stop, total)
    picked = torch.gather(a, 1, chosen[:, :, None, None].expand(-1, -1, *a.shape[2:]))  # (N, k, h, w)
    attributions = {}
    for obj, values in f.items():
        alpha = values.view(req.n, k).softmax(dim=1)
        coarse = torch.relu((alpha[:, :, None, None] * picked).sum(dim=1, keepdim=True))
        attributions[obj] = upsample(coarse, size)
    return MethodOutput(attributions=attributions, maps={obj: v[:, 0] for obj, v in attributions.items()},
                        logits=logits, targets=targets, used={"layer": layer, "channels": k})


METHOD = AttributionMethod(
    name="score_cam", title=TITLE, citation="Wang et al. 2020",
    summary="ReLU(Σ_k α_k A^k), α = softmax over channels of f(x masked by upsampled A^k); forward passes only",
    params=(LAYER_PARAM,
            Param("channels", DEFAULT_CHANNELS, int, "masked copies per image at most: the feature maps that vary "
                  "most over positions (the layer's channel count or more: every channel, as the paper)",
                  minimum=1, maximum=MAX_CHANNELS, costly=True)),
    loss_objective="-L", output="layer", run=run, passes=passes, default_view=False,
    needs=frozenset({"conv_layer"}),
    empty_reason="Score-CAM's ReLU left nothing: the score-weighted feature maps sum to nothing positive",
    family="CAM",
)
