"""Expected Gradients (GradientSHAP): (x − x′) ⊙ the gradient at a random point of a random path, averaged.

Erion, Janizek, Sturmfels, Lundberg & Lee, "Improving performance of deep learning models with axiomatic
attribution priors and expected gradients", Nature Machine Intelligence 2021; the same estimator as
GradientSHAP (Lundberg & Lee 2017) as Captum's ``GradientShap`` computes it::

    EG(x) = E_{x′ ~ D, α ~ U(0, 1), ε ~ N(0, stdevs²)} [ (x + ε − x′) ⊙ ∇f(x′ + α (x + ε − x′)) ]

estimated from ``samples`` draws. Each draw s picks a reference x′ (uniformly, with replacement) from a set
of K reference images D, an α and, with ``stdevs`` > 0, Gaussian noise ε on the input (absolute, in the
model's input space, as Captum's ``stdevs``). The reference sets (``baselines``):

- "blur" (the default): K = 4 Gaussian blurs of the image, sigma 0.5, 1, 2 and 4 times the blur baseline's
  (5 px at 224, scaled with the size: :mod:`saliency_core.core.baselines`): the map explains the detail the
  blurs remove. Works on any model.
- "noise": K = :data:`NOISE_REFERENCES` images of uniform noise in the model's pixel range [0, 1], through its
  normalisation (needs a LoadedModel, as "black" does), shared by every image.
- "mixed": the four named baselines of :mod:`saliency_core.core.baselines` (black, dataset mean, blur, the
  image's mean colour); needs the normalisation for black.
- a tensor (K, 3, H, W): K reference images shared by every image (the paper's references are training images).

Reproducible and batch-invariant: draw s (its reference's index, α and ε) comes from a private CPU generator
seeded with (``seed``, s) only, never torch's global one, and is the same for every image of a batch, so an
image's map does not depend on the rest of the batch, and more samples keep the draws of fewer.

Completeness holds in expectation: E[Σ EG] = E[f(x + ε) − f(x′)]. ``convergence`` reports, per image and
objective, Σ EG − (1/S) Σ_s (f(x + ε_s) − f(x′_s)), the change averaged over the *same* draws (Captum's
per-sample convergence deltas, averaged), relative to
:func:`~saliency_core.methods.integrated_gradients.gap_scale` of the two averages. It measures the error of
sampling α alone (it shrinks like 1/√samples): the choice of references is the user's. It costs a forward
pass of every reference (and of every noisy input when ``stdevs`` > 0), declared in :func:`passes`.

The loss objective is used as −L (the target's log-probability), so that positive attributions are evidence
for the target, as for Integrated Gradients.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from saliency_core.core import baselines as baseline_images
from saliency_core.core import limits
from saliency_core.core.gradients import objective_per_image
from saliency_core.errors import InvalidInputError
from saliency_core.methods._common import (
    MethodOutput,
    Request,
    add_rows_per_image,
    clean_forward,
    forward_rows,
    gradient_rows,
    resolve_targets,
)
from saliency_core.methods.declaration import AttributionMethod, Param, Passes
from saliency_core.methods.integrated_gradients import completeness_gap

#: The reference sets by name (a tensor (K, 3, H, W) is the other choice).
BASELINE_SETS = ("blur", "noise", "mixed")
#: The "blur" set: these multiples of the blur baseline's sigma (5 px at 224).
BLUR_FACTORS = (0.5, 1.0, 2.0, 4.0)
#: The "mixed" set: the named baselines of saliency_core.core.baselines.
MIXED = ("black", "dataset_mean", "blur", "mean")
#: Uniform-noise reference images of the "noise" set.
NOISE_REFERENCES = 16
#: Draws when not told: 32 gradient rows, about 3 s for one 224 px image on the idle 2-core CPU.
SAMPLES = 32
#: The most input noise the dashboard and the batch job take (in the model's input space, where the ImageNet
#: normalisation spans about 4.6).
MAX_STDEVS = 1.0
#: Keeps the draws' generators apart from other methods' seeded with the same seed.
_DRAWS, _NOISE_IMAGES = 0x45470001, 0x45470002


def reference_count(baselines: str | torch.Tensor) -> int:
    """K, the reference images of a set: a tensor's first dimension, else the named set's size."""
    if isinstance(baselines, torch.Tensor):
        return int(baselines.shape[0]) if baselines.dim() == 4 else 1
    return {"blur": len(BLUR_FACTORS), "noise": NOISE_REFERENCES, "mixed": len(MIXED)}.get(baselines, 1)


def passes(samples: int = SAMPLES, baselines: str | torch.Tensor = "blur", stdevs: float = 0.0,
           **_params: object) -> Passes:
    """Per image: one gradient row per draw; forward rows for the clean image (its top-1), each of the K
    references and, with ``stdevs`` > 0, each noisy input (the completeness gap's f(x′) and f(x + ε))."""
    return Passes(gradient=samples, forward=1 + reference_count(baselines) + (samples if stdevs > 0 else 0))


def _generator(*words: int) -> torch.Generator:
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(1, np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state))


def draw(seed: int, sample: int, references: int, shape: tuple[int, ...] | None = None
         ) -> tuple[int, float, torch.Tensor | None]:
    """Draw ``sample``: (index of its reference in [0, references), α in [0, 1) as a float64, standard normal
    noise of ``shape`` as float32 on CPU or None without a shape), a function of (seed, sample) only. The noise
    is drawn last, so the index and α do not depend on whether it is asked for."""
    g = _generator(seed, sample, _DRAWS)
    index = int(torch.randint(references, (1,), generator=g))
    alpha = float(torch.rand(1, generator=g, dtype=torch.float64))
    noise = None if shape is None else torch.randn(shape, generator=g, dtype=torch.float32)
    return index, alpha, noise


def noise_references(seed: int, shape: tuple[int, ...], mean, std, count: int = NOISE_REFERENCES) -> torch.Tensor:
    """(count, *shape) float32 images of uniform noise in the pixel range [0, 1], normalised with mean/std."""
    u = torch.rand((count, *shape), generator=_generator(seed, _NOISE_IMAGES), dtype=torch.float32)
    m = torch.tensor([float(v) for v in mean]).view(-1, 1, 1)
    s = torch.tensor([float(v) for v in std]).view(-1, 1, 1)
    return (u - m) / s


def references(req: Request, baselines: str | torch.Tensor, seed: int) -> tuple[torch.Tensor, dict[str, object]]:
    """The reference sets: (B, K, 3, H, W) on the device, B = N (one set per image) or 1 (shared by every image),
    and what to record beyond the parameters."""
    x = req.x()
    if isinstance(baselines, torch.Tensor):
        one = tuple(x.shape[1:])
        if baselines.dim() != 4 or tuple(baselines.shape[1:]) != one or baselines.shape[0] < 1 \
                or not baselines.is_floating_point():
            raise InvalidInputError(f"baselines as a tensor must be a float tensor (K, *{one}): K reference images "
                                    f"shaped like one image of X, got {tuple(baselines.shape)} {baselines.dtype}")
        refs = baselines.detach().to(device=req.device, dtype=req.dtype)[None]
        return refs, {"baselines": "tensor", "references": int(refs.shape[1])}
    if baselines not in BASELINE_SETS:
        raise InvalidInputError(f"baselines must be one of {BASELINE_SETS} or a tensor (K, 3, H, W), got {baselines!r}")
    sigma = baseline_images.resolve_blur_sigma(x.shape)
    used: dict[str, object] = {"references": reference_count(baselines)}
    if baselines == "blur":
        refs = torch.stack([baseline_images.gaussian_blur(x, f * sigma) for f in BLUR_FACTORS], dim=1)
        return refs, {**used, "blur_sigma": sigma}
    norm = baseline_images.normalisation_of(req.model, None, None)
    if norm is None:
        raise InvalidInputError(f'baselines "{baselines}" needs the model\'s normalisation (mean and std), which a '
                                'bare module does not carry: pass a LoadedModel, baselines="blur", or the '
                                "reference images as a tensor (K, 3, H, W)")
    if baselines == "noise":
        refs = noise_references(seed, tuple(x.shape[1:]), *norm).to(device=req.device, dtype=req.dtype)[None]
        return refs, used
    refs = torch.stack([baseline_images.make_baseline(x, name, mean=norm[0], std=norm[1]) for name in MIXED], dim=1)
    return refs, {**used, "blur_sigma": sigma}


def run(req: Request, samples: int = SAMPLES, baselines: str | torch.Tensor = "blur", stdevs: float = 0.0,
        seed: int = 0) -> MethodOutput:
    """attributions[obj] = (1/S) Σ_s (x + ε_s − x′_s) ⊙ ∇f(α_s (x + ε_s) + (1 − α_s) x′_s), f = s_y or −L;
    (N, 3, H, W) signed."""
    refs, used = references(req, baselines, seed)
    k_refs = refs.shape[1]
    logits = clean_forward(req)
    targets = resolve_targets(logits, req.y)
    x = req.x()
    n, shape = req.n, tuple(x.shape[1:])
    noisy = stdevs > 0
    drawn = [draw(seed, s, k_refs) for s in range(samples)]
    index = torch.tensor([d[0] for d in drawn], device=req.device)
    alpha = torch.tensor([d[1] for d in drawn], dtype=torch.float64).to(device=req.device, dtype=req.dtype)
    phases = _Phases(req, n * (k_refs + (samples if noisy else 0) + samples))

    def ref_of(image: torch.Tensor, sample_or_k: torch.Tensor) -> torch.Tensor:
        return refs[image if refs.shape[0] > 1 else torch.zeros_like(image), sample_or_k]

    def inputs(rows: range, per_image: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image, sample) of rows and the inputs x + ε_s (x alone without noise) of those rows."""
        image = torch.tensor([r // per_image for r in rows], device=req.device)
        sample = torch.tensor([r % per_image for r in rows], device=req.device)
        if not noisy:
            return image, sample, x[image]
        z = {s: draw(seed, s, k_refs, shape)[2] for s in set(sample.tolist())}  # shared by the images
        eps = torch.stack([z[s] for s in sample.tolist()]).to(device=req.device, dtype=req.dtype)
        return image, sample, x[image] + stdevs * eps

    # f at every reference, and at every noisy input: what the draws' change is averaged from.
    f_ref = {o: torch.empty(n, k_refs, device=req.device, dtype=req.dtype) for o in req.objectives}

    def build_ref(start: int, stop: int) -> torch.Tensor:
        rows = torch.arange(start, stop, device=req.device)
        return ref_of(rows // k_refs, rows % k_refs)

    def keep(into: dict[str, torch.Tensor]):
        def consume(start: int, stop: int, values: dict[str, torch.Tensor]) -> None:
            for o, v in values.items():
                into[o].view(-1)[start:stop] = v
        return consume

    forward_rows(phases.next(), k_refs, targets, build_ref, keep(f_ref))
    if noisy:
        f_in = {o: torch.empty(n, samples, device=req.device, dtype=req.dtype) for o in req.objectives}
        forward_rows(phases.next(), samples, targets, lambda a, b: inputs(range(a, b), samples)[2],
                     keep(f_in))
    else:
        f_in = {o: objective_per_image(logits, targets, o, req.loss_sign)[:, None].expand(n, samples)
                for o in req.objectives}

    sums = {o: torch.zeros_like(x) for o in req.objectives}
    deltas: dict[int, torch.Tensor] = {}

    def build(start: int, stop: int) -> torch.Tensor:
        image, sample, x_in = inputs(range(start, stop), samples)
        ref = ref_of(image, index[sample])
        a = alpha[sample].view(-1, 1, 1, 1)
        deltas[start] = x_in - ref
        return a * x_in + (1 - a) * ref  # Captum's point: exact at both ends

    def consume(start: int, stop: int, grads: dict[str, torch.Tensor]) -> None:
        delta = deltas.pop(start)
        for o, g in grads.items():
            add_rows_per_image(sums[o], start, stop, samples, delta * g)

    gradient_rows(phases.next(), samples, targets, build, consume)
    attributions, convergence = {}, {}
    for o, s in sums.items():
        attributions[o] = req.signed(o, s / samples)  # the rows ran +L
        f_end = f_in[o].double().mean(dim=1)
        f_start = f_ref[o].double()[:, index].mean(dim=1)
        total = attributions[o].double().sum(dim=(1, 2, 3))
        convergence[o] = completeness_gap(total, f_end, f_start).to(req.dtype)
    return MethodOutput(attributions=attributions, logits=logits, targets=targets, convergence=convergence,
                        used=used)


class _Phases:
    """Progress over the method's three kinds of rows (references, noisy inputs, path points) as one count of
    ``total`` rows: each phase gets a copy of the request whose progress adds the rows of the phases before."""

    def __init__(self, req: Request, total: int) -> None:
        self.req, self.total, self.offset, self.last = req, total, 0, 0

    def next(self) -> Request:
        self.offset = self.last
        if self.req.progress is None:
            return self.req
        offset = self.offset

        def report(done: int, _total: int) -> None:
            self.last = offset + done
            self.req.report(self.last, self.total)

        return dataclasses.replace(self.req, progress=report)


METHOD = AttributionMethod(
    name="expected_gradients", title="Expected Gradients", citation="Erion et al. 2021",
    summary="(x − x′) ⊙ ∇f(x′ + α (x − x′)) averaged over random references x′ and random α ~ U(0, 1) "
            "(GradientSHAP)",
    params=(Param("samples", SAMPLES, int, "random draws (reference, α, noise), one gradient pass each",
                  minimum=1, maximum=limits.MAX_PASSES, costly=True),
            Param("baselines", "blur", str, 'the references x′ are drawn from: "blur" (4 blurs of the image, sigma '
                  '2.5 to 20 px at 224), "noise" (16 uniform-noise images), "mixed" (black, the dataset\'s mean '
                  "colour, a blur, the image's mean colour), or a tensor of K reference images (K, 3, H, W)",
                  BASELINE_SETS, tensor_ok=True),
            Param("stdevs", 0.0, float, "σ of the Gaussian noise added to the input at each draw (the model's input "
                  "space)", minimum=0.0, maximum=MAX_STDEVS),
            Param("seed", 0, int, "seed of the draws (a private generator: same seed, same map)", minimum=0,
                  maximum=limits.MAX_SEED)),
    loss_objective="-L", output="input", run=run, passes=passes, default_view=False, needs=frozenset({"baseline"}),
    family="path",
    gap_note="the error of sampling α over the same draws, which more samples reduce",
)
