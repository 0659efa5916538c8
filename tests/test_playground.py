"""The playground of lesson 13 (lesson_lib.course.playground): what it draws is what generate draws."""
import pytest
import torch

from lesson_lib.course import playground
from lesson_lib.pretrained import latent_decoding, load_pretrained
from lesson_lib.sample import generate


def test_each_model_offers_the_samplers_it_was_trained_for():
    assert playground.samplers_for("mnist_cond") == ("ddim", "ddpm", "heun", "dpmpp2m")
    assert playground.samplers_for("mnist_consistency") == ("consistency",)
    assert playground.samplers_for("mnist_distilled_4") == ("ddim",) and playground.fixed_steps("mnist_distilled_4") == 4
    assert playground.fixed_steps("mnist_cond") is None
    if "mnist_latent_flow" in playground.models():
        assert playground.samplers_for("mnist_latent_flow") == ("euler", "heun")


def test_draw_is_one_generate_call_with_the_cards_defaults():
    """A latent model, guided: the same images as generate with its decoder, one column of 10 classes."""
    images, labels, seconds = playground.draw("mnist_latent", "dpmpp2m", 3, w=2.0, seed=5)
    model, schedule = load_pretrained("mnist_latent")
    from lesson_lib.diffusion.guidance import ClassifierFreeGuidance
    direct = generate(model, schedule, 10, "dpmpp2m", 3, {"y": torch.arange(10)}, seed=5, progress=False,
                      guidance=lambda d: ClassifierFreeGuidance(d, w=2.0), **latent_decoding("mnist_latent"))
    assert torch.equal(labels, torch.arange(10)) and images.shape == (10, 1, 28, 28) and seconds > 0
    assert torch.equal(images, direct.clamp(-1, 1))
    student, _, _ = playground.draw("mnist_distilled_2", per_class=2, labels=None)
    assert student.shape == (20, 1, 28, 28)


def test_draw_refuses_what_a_model_cannot_do():
    with pytest.raises(ValueError, match="name must be one of"):
        playground.draw("mnist_classifier")
    with pytest.raises(ValueError, match="sampled with consistency"):
        playground.draw("mnist_consistency", "ddim")
    with pytest.raises(ValueError, match="leave w at 0"):
        playground.draw("mnist_consistency", w=1.0)


def test_the_panel_builds_and_draws(capsys):
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    panel = playground.playground()
    model_box, sampler_box, steps_box = panel.children[0].children
    model_box.value = "mnist_consistency"               # the sampler follows the model
    assert sampler_box.options == ("consistency",)
    assert "20 samples in" in capsys.readouterr().out       # drawn at start and again for the new model
