"""The network is the authors' network: layout, parameter counts, and golden outputs."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from conftest import REFERENCE, needs_reference
from u2deploy.model import DeployModel, U2Net, count_parameters
from u2deploy.model.registry import registry

LAYOUTS = {"full": "u2net_state_dict.tsv", "small": "u2netp_state_dict.tsv"}
GOLDEN = {"full": "u2net_golden.npz", "small": "u2netp_golden.npz"}


def _golden_module():
    spec = importlib.util.spec_from_file_location("golden_weights", REFERENCE / "golden" / "golden_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("variant,expected", [("full", 44_009_869), ("small", 1_131_181)])
def test_parameter_counts(variant: str, expected: int) -> None:
    assert count_parameters(U2Net(variant)) == expected
    assert {w.num_params for w in registry().values() if w.variant == variant} == {expected}


@needs_reference
@pytest.mark.parametrize("variant", ["full", "small"])
def test_state_dict_matches_the_official_layout(variant: str) -> None:
    rows = []
    for line in (REFERENCE / LAYOUTS[variant]).read_text().splitlines():
        if line and not line.startswith("#"):
            key, dtype, shape = line.split("\t")
            rows.append((key, dtype, () if shape == "scalar" else tuple(map(int, shape.split("x")))))
    ours = [(k, str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in U2Net(variant).state_dict().items()]
    assert ours == rows


@needs_reference
@pytest.mark.parametrize("variant", ["full", "small"])
@pytest.mark.parametrize("h,w", [(67, 45), (64, 64)])
def test_reproduces_the_authors_outputs(variant: str, h: int, w: int) -> None:
    golden = _golden_module()
    expected = np.load(REFERENCE / "golden" / GOLDEN[variant])
    net = U2Net(variant).eval()
    net.load_state_dict(golden.formula_state_dict(REFERENCE / LAYOUTS[variant], float(expected["gain"])),
                        strict=True)
    with torch.inference_mode():
        maps = torch.cat(net(golden.golden_input(h, w)), dim=1)[0].numpy()
    assert maps.shape == (7, h, w)
    assert np.abs(maps - expected[f"outputs_{h}x{w}"]).max() <= 1e-5


@pytest.mark.parametrize("h,w", [(333, 251), (32, 32), (97, 161)])
def test_any_input_size(h: int, w: int) -> None:
    net = U2Net("small").eval()
    with torch.inference_mode():
        maps = net(torch.randn(2, 3, h, w))
    assert len(maps) == 7 and all(m.shape == (2, 1, h, w) for m in maps)
    assert all(torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1 for m in maps)


def test_deploy_wrapper_returns_the_fused_map_or_all_seven() -> None:
    net = U2Net("small").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        maps = net(x)
        fused = DeployModel(net)(x)
        every = DeployModel(net, outputs="all")(x)
    assert torch.equal(fused, maps[0])
    assert len(every) == 7 and all(torch.equal(a, b) for a, b in zip(every, maps))
    with pytest.raises(ValueError):
        DeployModel(net, outputs="some")


def test_logits_are_the_maps_before_the_sigmoid() -> None:
    net = U2Net("small").eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.inference_mode():
        for logit, prob in zip(net.forward_logits(x), net(x)):
            assert torch.allclose(torch.sigmoid(logit), prob)


def test_registry_describes_weights_as_data() -> None:
    entries = registry()
    assert {"u2net", "u2netp", "u2net_human_seg"} <= entries.keys()
    for entry in entries.values():
        assert entry.variant in ("full", "small")
        assert len(entry.mean) == len(entry.std) == 3
        assert all(math.isfinite(v) for v in entry.mean + entry.std)
    assert entries["u2netp"].published["ECSSD"] == {"maxF": 0.943, "mae": 0.041}
