"""Cost counted from the network matches the architecture page; the claims check shows both variants."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from u2deploy.bench import claims
from u2deploy.bench.cost import count_cost
from u2deploy.model import U2Net

# shared/reference/U2NET-ARCHITECTURE.md, "Size and cost at 320×320".
ARCHITECTURE_PAGE = {"full": (44_009_869, 117.2, 119), "small": (1_131_181, 39.5, 119)}


@pytest.mark.parametrize("variant", ["full", "small"])
def test_params_flops_and_layers_match_the_architecture_page(variant: str) -> None:
    params, gflops, conv_layers = ARCHITECTURE_PAGE[variant]
    cost = count_cost(variant, (320, 320))
    assert cost.params == params
    assert round(cost.flops / 1e9, 1) == gflops
    assert cost.conv_layers == conv_layers
    assert cost.weight_bytes == 4 * params


def test_conv_flops_agree_with_pytorchs_own_counter() -> None:
    with torch.device("meta"):
        net = U2Net("small").eval()
        x = torch.empty(1, 3, 96, 72)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    assert count_cost("small", (96, 72)).conv_flops == counter.get_total_flops()


def test_flops_scale_with_pixels_and_batch_but_weights_do_not() -> None:
    base = count_cost("small", (320, 320))
    # 640 and 320 both halve evenly through all five poolings, so FLOPs scale exactly with pixels.
    assert count_cost("small", (640, 640)).conv_flops == 4 * base.conv_flops
    batched = count_cost("small", (320, 320), batch=2)
    assert batched.conv_flops == 2 * base.conv_flops
    assert batched.activation_bytes == 2 * base.activation_bytes
    assert batched.weight_bytes == base.weight_bytes


def test_byte_floor_follows_the_stated_model() -> None:
    fp32, fp16 = count_cost("small", (320, 320)), count_cost("small", (320, 320), precision="fp16")
    # Per RSU/RSU-4F stage and top level: 112 fused conv-BN-ReLU outputs, 33 pools, 38 resizes,
    # 11 residual adds, 6 side convolutions and the fusing 1×1 conv; concatenations are free.
    assert fp32.materialised_tensors == 112 + 33 + 38 + 11 + 7
    assert fp16.min_bytes * 2 == fp32.min_bytes
    assert fp32.at_precision("int8") == count_cost("small", (320, 320), precision="int8")
    assert fp32.other_flops["relu"] == fp32.other_flops["batchnorm"] // 2
    assert fp32.total_flops > fp32.conv_flops


def test_claims_put_paper_floors_and_counts_side_by_side() -> None:
    local = claims.Ceiling("test device (measured)", {"fp32": 1e11}, 1e10, "made up", measured=True)
    measured = [{"variant": "small", "batch": 1, "size": [320, 320], "model": "torch:small",
                 "backend": "torch", "device": "cpu", "precision": "fp32", "fps": 2.0, "weights": "w",
                 "latency_ms": {"p50": 500.0, "mean": 500.0}}]
    report = claims.check(("full", "small"), (320, 320), measured, local)
    full, small = report["variants"]["full"], report["variants"]["small"]
    assert full["paper"]["fps"] == 30 and small["paper"]["fps"] == 40
    floor_1080 = next(f for f in full["floors"] if f["device"] == "GTX 1080 Ti" and f["precision"] == "fp32")
    assert floor_1080["ms"] == pytest.approx(full["cost"]["total_flops"] / 11.3e12 * 1e3)
    assert floor_1080["kind"].startswith("estimate")
    assert small["measured"]["fraction_of_local_floor"] == pytest.approx(
        small["cost"]["total_flops"] / 1e11 * 1e3 / 500.0)
    text = claims.render(report)
    for needed in ("117.2 G", "39.5 G", "30 FPS", "40 FPS", "44,009,869", "1,131,181", "estimate",
                   "(measured", "not measured"):
        assert needed in text


def test_claims_fit_80_columns_and_show_the_mean_their_ratio_uses() -> None:
    """The floor ÷ measured ratio, the FPS and the time shown all come from the mean, the p50 beside it."""
    local = claims.Ceiling("this CPU, A Processor With A Rather Long Marketing Name (measured)", {"fp32": 1e11},
                           1e10, "made up", measured=True)
    measured = [{"variant": v, "batch": 1, "size": [320, 320], "model": f"torch:{v}", "backend": "torch",
                 "device": "cpu", "precision": "fp32", "fps": 1e3 / 4000.0, "weights": "w",
                 "latency_ms": {"p50": 3528.0, "mean": 4000.0}} for v in ("full", "small")]
    report = claims.check(("full", "small"), (320, 320), measured, local)
    text = claims.render(report)
    assert max(map(len, text.splitlines())) <= 80, text
    full = report["variants"]["full"]
    ratio = full["measured"]["fraction_of_local_floor"]
    assert ratio == pytest.approx(full["cost"]["total_flops"] / 1e11 * 1e3 / 4000.0)
    shown = next(line for line in text.splitlines() if line.startswith("measured mean:"))
    assert "4000.0 ms = 0.25 FPS" in shown and "3528.0 ms" in text
    ratio_line = next(line for line in text.splitlines() if "local floor ÷ measured mean" in line)
    assert f"{100 * ratio:.0f}%" in ratio_line


def test_measured_ceilings_are_positive() -> None:
    ceiling = claims.measure_ceilings("cpu", seconds=0.01, matmul_n=128, copy_mib=4)
    assert ceiling.measured and ceiling.flops["fp32"] > 0 and ceiling.bandwidth > 0
