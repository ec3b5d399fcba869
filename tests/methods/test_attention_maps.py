"""Attention rollout and gradient-weighted attention (saliency_core/methods/attention_*.py) on tiny ViTs.

The oracles compute every attention matrix here, from the blocks' weights
(torchvision's ``in_proj_weight``, timm's ``qkv``), in a forward pass
written out in this file, then the papers' rules: Abnar & Zuidema's
rollout, Chefer et al.'s gradient-weighted accumulation with
``torch.autograd.grad`` of the test's own attention matrices.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
import torch.nn.functional as F
import torchvision
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer as TimmViT

from saliency_core import attribute
from saliency_core.errors import InvalidInputError
from saliency_core.methods import attention_gradients, attention_rollout
from saliency_core.methods.attention_layers import attention_copy, attention_modules
from saliency_core.methods.declaration import NEEDS, Passes
from saliency_core.methods.model_needs import unmet_needs, why_not
from saliency_core.methods.registry import explains
from tests.methods.small_nets import fingerprint, relu_net

METHODS = ("attention_rollout", "chefer_attention")


def _random_head(model: torch.nn.Module, *heads: torch.nn.Linear) -> torch.nn.Module:
    """torchvision zero-initialises its head (every logit 0): random weights give the gradients something."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for head in heads:
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.5)
    return model.eval()


def tv_vit(size: int = 32, patch: int = 8, dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    m = torchvision.models.VisionTransformer(image_size=size, patch_size=patch, num_layers=2, num_heads=2,
                                             hidden_dim=32, mlp_dim=64, num_classes=10)
    return _random_head(m, m.heads.head).to(dtype)


def timm_vit(dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(1)
    m = TimmViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    return m.eval().to(dtype)


def timm_deit(dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(2)
    m = VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    return m.eval().to(dtype)


def swin() -> torch.nn.Module:
    torch.manual_seed(3)
    return torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                              window_size=[4, 4], num_classes=10).eval()


BUILDERS = {"torchvision": tv_vit, "timm": timm_vit, "deit_distilled": timm_deit}


def images(n: int = 3, size: int = 32, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(9), dtype=dtype)


# ---------------------------------------------------------------- the oracle: attention from the weights


def _attention(x: torch.Tensor, w_q, b_q, w_k, b_k, heads: int, q_norm=None, k_norm=None, scale=None):
    b, t, _ = x.shape
    q = F.linear(x, w_q, b_q).reshape(b, t, heads, -1).transpose(1, 2)
    k = F.linear(x, w_k, b_k).reshape(b, t, heads, -1).transpose(1, 2)
    if q_norm is not None:
        q, k = q_norm(q), k_norm(k)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)


def _values_out(x: torch.Tensor, a: torch.Tensor, w_v, b_v, w_o, b_o) -> torch.Tensor:
    b, t, _ = x.shape
    v = F.linear(x, w_v, b_v).reshape(b, t, a.shape[1], -1).transpose(1, 2)
    return F.linear((a @ v).transpose(1, 2).reshape(b, t, -1), w_o, b_o)


def oracle_forward(model: torch.nn.Module, X: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(logits, [A_l (N, heads, T, T)]) with every attention computed here, in the graph of the logits."""
    attentions = []
    if isinstance(model, torchvision.models.VisionTransformer):
        x = model._process_input(X)
        x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1) + model.encoder.pos_embedding
        for block in model.encoder.layers:
            mha = block.self_attention
            w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
            b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
            y = block.ln_1(x)
            a = _attention(y, w_q, b_q, w_k, b_k, mha.num_heads)
            attentions.append(a)
            x = x + _values_out(y, a, w_v, b_v, mha.out_proj.weight, mha.out_proj.bias)
            x = x + block.mlp(block.ln_2(x))
        return model.heads(model.encoder.ln(x)[:, 0]), attentions
    x = model._pos_embed(model.patch_embed(X))
    x = model.norm_pre(x)
    for block in model.blocks:
        attn = block.attn
        w_q, w_k, w_v = attn.qkv.weight.chunk(3)
        b_q, b_k, b_v = attn.qkv.bias.chunk(3)
        y = block.norm1(x)
        a = _attention(y, w_q, b_q, w_k, b_k, attn.num_heads, attn.q_norm, attn.k_norm, attn.scale)
        attentions.append(a)
        x = x + block.ls1(_values_out(y, a, w_v, b_v, attn.proj.weight, attn.proj.bias))
        x = x + block.ls2(block.mlp(block.norm2(x)))
    return model.forward_head(model.norm(x)), attentions


def prefix_tokens(model: torch.nn.Module) -> int:
    return 1 if isinstance(model, torchvision.models.VisionTransformer) else model.num_prefix_tokens


def on_image(model, grid_rows: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 1, size, size): class-token rows (N, T) over the patches, on the grid, upsampled bilinearly."""
    rows = grid_rows[:, prefix_tokens(model):]
    side = int(rows.shape[1] ** 0.5)
    return F.interpolate(rows.reshape(-1, 1, side, side), size=(size, size), mode="bilinear", align_corners=False)


def oracle_rollout(attentions: list[torch.Tensor], fusion: str = "mean") -> torch.Tensor:
    """(N, T): Abnar & Zuidema's rollout, the class token's row."""
    result = None
    for a in attentions:
        fused = {"mean": a.mean(1), "max": a.max(1).values, "min": a.min(1).values}[fusion]
        eye = torch.eye(a.shape[-1], dtype=a.dtype)
        fused = (fused + eye) / 2
        fused = fused / fused.sum(dim=-1, keepdim=True)
        result = fused if result is None else torch.bmm(fused, result)
    return result[:, 0]


def oracle_chefer(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, objective: str) -> torch.Tensor:
    """(N, T): Chefer et al.'s class-token row of R for f = s_y or −L = log p_y, one image at a time."""
    rows = []
    for i in range(X.shape[0]):
        logits, attentions = oracle_forward(model, X[i:i + 1])
        f = logits[0, y[i]] if objective == "score" else torch.log_softmax(logits, dim=1)[0, y[i]]
        grads = torch.autograd.grad(f, attentions)
        t = attentions[0].shape[-1]
        r = torch.eye(t, dtype=X.dtype)
        for a, g in zip(attentions, grads, strict=True):
            cam = (g[0] * a[0]).clamp(min=0).mean(dim=0)
            r = r + cam @ r
        rows.append(r[0])
    return torch.stack(rows).detach()


# ---------------------------------------------------------------- the private recording copy


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_recording_copy_gives_the_models_own_logits(kind, dtype):
    model = BUILDERS[kind](dtype=dtype)
    X = images(dtype=dtype)
    copy = attention_copy(model, "test")
    with torch.no_grad():
        own, recorded = model(X), copy(X)
        oracle, _ = oracle_forward(model, X)
    assert float(own.abs().amax()) > 0.1  # logits that say something
    torch.testing.assert_close(recorded, own, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)
    torch.testing.assert_close(oracle, own, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)


def test_readable_attention_modules_are_found_by_kind():
    assert attention_modules(tv_vit()) == ["encoder.layers.encoder_layer_0.self_attention",
                                           "encoder.layers.encoder_layer_1.self_attention"]
    assert attention_modules(timm_vit()) == ["blocks.0.attn", "blocks.1.attn"]
    assert attention_modules(timm_deit()) == ["blocks.0.attn", "blocks.1.attn"]
    assert attention_modules(swin()) == [] and attention_modules(relu_net()) == []


# ---------------------------------------------------------------- against the oracles


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_rollout_equals_the_papers_rule_on_attention_computed_from_the_weights(kind):
    model, X = BUILDERS[kind](), images()
    with torch.no_grad():
        _, attentions = oracle_forward(model, X)
    r = attribute(model, X, [0, 3, -1], "attention_rollout")
    expected = on_image(model, oracle_rollout(attentions), 32)
    for obj in ("score", "loss"):  # no target: the same map for both objectives
        torch.testing.assert_close(r.attributions[obj], expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(r.maps[obj], expected[:, 0], rtol=1e-10, atol=1e-12)
    assert r.params == {"head_fusion": "mean", "discard_ratio": 0.0}
    assert r.attributions["score"].shape == (3, 1, 32, 32) and bool((r.maps["score"] >= 0).all())


@pytest.mark.parametrize("fusion", ["max", "min"])
def test_rollout_head_fusions(fusion):
    model, X = tv_vit(), images(n=2)
    with torch.no_grad():
        _, attentions = oracle_forward(model, X)
    r = attribute(model, X, [1, 2], "attention_rollout", head_fusion=fusion)
    torch.testing.assert_close(r.attributions["score"], on_image(model, oracle_rollout(attentions, fusion), 32),
                               rtol=1e-10, atol=1e-12)


def test_discard_ratio_zeroes_the_smallest_entries_but_the_class_tokens_own():
    fused = torch.tensor([[[0.05, 0.5, 0.45], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]], dtype=torch.float64)
    kept = attention_rollout.discard(fused, 3 / 9)  # the 3 smallest: 0.05 (kept: [0, 0]), 0.1, 0.1
    assert kept.tolist() == [[[0.05, 0.5, 0.45], [0.0, 0.8, 0.0], [0.3, 0.3, 0.4]]]
    model, X = timm_vit(), images(n=1)
    plain = attribute(model, X, [0], "attention_rollout").maps["score"]
    filtered = attribute(model, X, [0], "attention_rollout", discard_ratio=0.9).maps["score"]
    assert not torch.allclose(plain, filtered)
    with pytest.raises(InvalidInputError, match="discard_ratio"):
        attribute(model, X, [0], "attention_rollout", discard_ratio=1.0)


def test_rollout_has_no_target_and_says_so():
    model, X = timm_deit(), images(n=1)
    a = attribute(model, X, [0], "attention_rollout").attributions["score"]
    b = attribute(model, X, [7], "attention_rollout").attributions["loss"]
    assert torch.equal(a, b)
    assert attention_rollout.METHOD.uses_target is False and attention_gradients.METHOD.uses_target is True
    assert explains("attention_rollout", "loss") == "L" and explains("chefer_attention", "loss") == "−L"
    with pytest.raises(ValueError, match="no sign to choose"):  # no target: nothing to negate
        dataclasses.replace(attention_rollout.METHOD, loss_objective="-L")


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_gradient_weighted_attention_equals_autograd_on_the_tests_own_attention(kind):
    model, X = BUILDERS[kind](), images()
    r = attribute(model, X, [0, 3, -1], "chefer_attention")
    for obj in ("score", "loss"):
        expected = on_image(model, oracle_chefer(model, X, r.targets, obj), 32)
        assert float(expected.amax()) > 0
        torch.testing.assert_close(r.attributions[obj], expected, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(r.maps["score"], r.maps["loss"])  # the objectives differ


def test_gradient_weighted_attention_follows_the_target():
    model, X = tv_vit(), images(n=1)
    a = attribute(model, X, [0], "chefer_attention").maps["score"]
    b = attribute(model, X, [4], "chefer_attention").maps["score"]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_a_batch_equals_its_images_one_by_one(kind, method):
    model, X = BUILDERS[kind](), images(n=3)
    y = [2, 5, -1]
    together = attribute(model, X, y, method)
    for i in range(3):
        alone = attribute(model, X[i:i + 1], y[i:i + 1], method)
        for obj in ("score", "loss"):
            torch.testing.assert_close(together.attributions[obj][i:i + 1], alone.attributions[obj],
                                       rtol=1e-10, atol=1e-12)
    chunked = attribute(model, X, y, method, max_batch=2)
    for obj in ("score", "loss"):
        torch.testing.assert_close(chunked.attributions[obj], together.attributions[obj], rtol=1e-10, atol=1e-12)


def test_a_224_px_torchvision_vit_with_16_px_patches_gives_a_14_by_14_grid():
    model, X = tv_vit(size=224, patch=16, dtype=torch.float32), images(n=1, size=224, dtype=torch.float32)
    with torch.no_grad():
        _, attentions = oracle_forward(model, X)
    assert attentions[0].shape == (1, 2, 197, 197)
    r = attribute(model, X, [0], "attention_rollout")
    torch.testing.assert_close(r.attributions["score"], on_image(model, oracle_rollout(attentions), 224),
                               rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- the shared model


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_the_shared_model_and_the_input_are_left_untouched(kind, method):
    model, X = BUILDERS[kind](dtype=torch.float32), images(dtype=torch.float32)
    before, X_before = fingerprint(model), X.clone()
    types = [type(m) for m in model.modules()]
    with torch.inference_mode():
        under_inference = attribute(model, X.clone(), [0, 1, 2], method)
    r = attribute(model, X, [0, 1, 2], method)
    assert fingerprint(model) == before and [type(m) for m in model.modules()] == types
    assert torch.equal(X, X_before) and X.grad is None
    for obj in ("score", "loss"):
        assert torch.equal(under_inference.attributions[obj], r.attributions[obj])
    torch.testing.assert_close(r.logits, model(X).detach(), rtol=0, atol=1e-5)  # float32, grad mode: 3e-6


def test_threads_mixing_both_methods_on_one_model_equal_sequential():
    model = timm_deit(dtype=torch.float32)
    jobs = [(METHODS[i % 2], images(n=1, dtype=torch.float32) * (1 + i / 10), [i]) for i in range(6)]
    before = fingerprint(model)
    sequential = [attribute(model, X, y, method) for method, X, y in jobs]
    results: list = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def work(i):
        barrier.wait()
        method, X, y = jobs[i]
        results[i] = attribute(model, X, y, method)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seq, par in zip(sequential, results, strict=True):
        for obj in ("score", "loss"):
            assert torch.equal(par.attributions[obj], seq.attributions[obj])
    assert fingerprint(model) == before


# ---------------------------------------------------------------- models they can't read


@pytest.mark.parametrize("method", [attention_rollout.METHOD, attention_gradients.METHOD])
@pytest.mark.parametrize("model", [relu_net(), swin()], ids=["cnn", "swin"])
def test_a_cnn_and_swin_are_not_offered_and_refused_with_what_is_read(model, method):
    assert unmet_needs(method, model) == ("attention_blocks",)
    assert why_not(method, model) == f"it needs {NEEDS['attention_blocks']}"
    assert "ViT/DeiT-style global self-attention" in why_not(method, model) and "Swin" in why_not(method, model)
    size = 16 if isinstance(model, torch.nn.Sequential) else 32
    with pytest.raises(InvalidInputError, match=r"ViT/DeiT-style transformer.*Swin"):
        attribute(model, torch.zeros(1, 3, size, size), [0], method.name)


def test_vits_meet_the_need_and_a_timm_vit_without_class_token_does_not():
    for build in BUILDERS.values():
        assert unmet_needs(attention_gradients.METHOD, build()) == ()
    pooled = TimmViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10,
                     class_token=False, global_pool="avg").eval()
    assert unmet_needs(attention_rollout.METHOD, pooled) == ("attention_blocks",)
    with pytest.raises(InvalidInputError, match="no class token"):
        attribute(pooled, torch.zeros(1, 3, 32, 32), [0], "attention_rollout")


def test_declared_costs():
    assert attention_rollout.METHOD.cost() == Passes(gradient=0, forward=1)
    assert attention_gradients.METHOD.cost() == Passes(gradient=1, forward=0)
    assert attention_rollout.METHOD.family == attention_gradients.METHOD.family == "attention"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_cuda_exact_matches_cpu_and_fast_agrees(kind, method):
    from scipy.stats import spearmanr

    X = images(n=2, dtype=torch.float32)
    cpu = attribute(BUILDERS[kind](dtype=torch.float32), X, [1, 2], method)
    gpu_model = BUILDERS[kind](dtype=torch.float32).cuda()
    exact = attribute(gpu_model, X, [1, 2], method, precision="exact")
    fast = attribute(gpu_model, X, [1, 2], method, precision="fast")
    for obj in ("score", "loss"):
        torch.testing.assert_close(exact.attributions[obj].cpu(), cpu.attributions[obj], rtol=1e-4, atol=1e-6)
        rho = spearmanr(fast.maps[obj].cpu().flatten(), exact.maps[obj].cpu().flatten()).statistic
        assert rho > 0.95, (obj, rho)
