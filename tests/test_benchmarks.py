"""The benchmark scripts measure what they claim: a fair twin, and figures that are numbers."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import throughput  # noqa: E402

from lesson_lib.course.inspection import count_parameters  # noqa: E402
from lesson_lib.models.unet import PRESETS, UNet, unet_preset  # noqa: E402


@pytest.mark.parametrize("name", list(PRESETS))
def test_diffusers_twin_has_the_same_size_and_interface(name):
    pytest.importorskip("diffusers")
    twin = throughput.diffusers_twin(name)
    ours = unet_preset(name)
    # "Equal-size" is exact: same parameter count, so any speed difference is implementation.
    assert count_parameters(twin) == count_parameters(ours)
    size, ch = ours.image_size, ours.in_channels
    x, t = torch.randn(2, ch, size, size), torch.tensor([3, 900])
    with torch.no_grad():
        assert twin(x, t, return_dict=False)[0].shape == ours(x, t).shape == x.shape


def test_measure_returns_positive_rates():
    model = UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                 attention_resolutions=(4,), image_size=8)
    r = throughput.measure(model, (1, 8, 8), "cpu", batch_size=2, seconds=0.0,
                           call=lambda m, x, t: m(x, t))
    assert r["batch_size"] == 2 and r["params_M"] == round(count_parameters(model) / 1e6, 2)
    assert r["train_img_per_s"] > 0 and r["sample_img_per_s"] > 0
