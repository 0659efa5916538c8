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


def test_every_guidance_row_names_a_sampler():
    import re

    import guidance

    keys = [key for key, _, _ in guidance.arms(25)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert key in ("mean_x_t", "mean_mean") or re.fullmatch(r"(cfg|cg|admg)([0-9.]+)", key), key
    assert {"cfg0", "cg1", "admg1"} <= set(keys)                 # the conditional model, CG at 1, ADM-G


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DDPM_DATA_DIR"), reason="set DDPM_DATA_DIR to the prepared datasets")
def test_sample_size_reference_draws_the_images_of_compute_metrics_and_real_floor():
    """benchmarks/sample_size.py computes features once; its floor and its FID at n must be the library's."""
    import sample_size

    from lesson_lib.data.images import load_mnist
    from lesson_lib.evaluation.fid import compute_metrics, real_floor

    torch.set_num_threads(1)
    reference = sample_size.Reference()
    n = 200
    floor = reference.floor(n)
    assert floor["fid"] == pytest.approx(real_floor("mnist", n)["fid"], rel=1e-5)
    assert floor["kid"] == pytest.approx(real_floor("mnist", n)["kid_mean"], rel=1e-4, abs=1e-7)
    images, labels = load_mnist("train")
    fake, y = images[-n:], labels[-n:]                    # stand-in samples: training images the floor did not draw
    arm = sample_size.measure(fake, y, reference)
    assert arm["fid"] == pytest.approx(compute_metrics(fake)["fid"], rel=1e-5)
    assert arm["accuracy"] > 0.95 and 0.8 < arm["trace_ratio"] < 1.25
    assert set(arm["fid_by_n"]) == {100, 200} and arm["fid_by_n"][100][0] > arm["fid_by_n"][200][0]


def test_a_benchmark_table_keeps_its_other_parts_and_refuses_another_benchmarks_file(tmp_path):
    import json

    import tables
    path = tmp_path / "table.json"
    tables.write_section(path, "benchmarks/a.py", "speed", {"rows": [1]})
    tables.write_section(path, "benchmarks/a.py", "quality", {"rows": [2]})
    table = json.loads(path.read_text())
    assert table["benchmark"] == "benchmarks/a.py" and table["speed"]["rows"] == [1] and table["quality"]["rows"] == [2]
    assert "hardware" in table["speed"] and table["speed"]["torch"] == torch.__version__
    with pytest.raises(SystemExit, match="was not written by benchmarks/b.py"):
        tables.write_section(path, "benchmarks/b.py", "speed", {"rows": [3]})
    assert json.loads(path.read_text()) == table


def test_distillation_shipped_measures_the_columns_it_is_given_and_refuses_unknown_students(monkeypatch, capsys):
    import distillation
    asked = {}
    monkeypatch.setattr(distillation, "shipped_table", lambda n, seed, **kwargs: asked.update(kwargs))
    monkeypatch.setattr(distillation.torch, "set_num_threads", lambda threads: None)   # leave this worker's threads
    distillation.main(["shipped", "--students", "--consistency-steps", "--mnist-cond-steps", "--v-teacher-steps", "128"])
    assert (asked["students"], asked["consistency_steps"], asked["mnist_cond_steps"]) == ([], [], [])
    assert asked["v_teacher_steps"] == [128]
    distillation.main(["shipped"])                                  # the defaults: every column of the table
    assert asked["students"] == sorted(distillation.STUDENTS) and asked["v_teacher_steps"] == list(distillation.CALLS)
    with pytest.raises(SystemExit):
        distillation.main(["shipped", "--students", "3"])
    assert "--students: the shipped students take [1, 2, 4, 8] steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        distillation.main(["shipped", "--update", "--json", "no_such_table.json"])
    assert "--update keeps the cells of an existing table: --json must name one" in capsys.readouterr().err


def test_distillation_shipped_update_replaces_the_measured_cells_and_keeps_the_others(monkeypatch, tmp_path):
    import json

    import distillation

    class Reference:                                                # no data: a stub reference and measure
        def __init__(self, data_dir):
            pass

        def floor(self, n):
            return {"fid": 0.5, "kid": 0.0, "fid_infinity": 0.1}

    monkeypatch.setattr(distillation, "Reference", Reference)
    monkeypatch.setattr(distillation, "cached", lambda key, make: (*make(), 1.0))
    monkeypatch.setattr(distillation, "measure", lambda images, labels, reference, seconds: {"fid": 0.25})
    monkeypatch.setattr(distillation, "verdict", lambda arm, floor: "")
    path = tmp_path / "table.json"
    old = {"student": {"model": "mnist_distilled_1", "fid": 9.0}, "consistency": {"fid": 0.6},
           "ddim_v_teacher": None, "ddim_mnist_cond": None}
    path.write_text(json.dumps({"n": 10, "seed": 0, "hardware": "then", "torch": "old", "wall_time_s": 100.0,
                                "rows": [{"calls": 1, **old}, {"calls": 2, **old}]}))
    table = distillation.shipped_table(10, 0, batch=10, json_path=path, students=(1,), consistency_steps=(),
                                       v_teacher_steps=(), mnist_cond_steps=(), update=True, log=lambda line: None)
    assert json.loads(path.read_text()) == distillation.rounded(table)
    one, two = table["rows"]
    assert one["student"]["fid"] == 0.25 and one["consistency"] == {"fid": 0.6}     # re-measured; kept
    assert two == {"calls": 2, **old} and table["hardware"] == "then" and table["wall_time_s"] > 100
    assert table["updated"][0]["arms"] == ["student 1"]
    with pytest.raises(ValueError, match="holds n = 10, seed 0, not n = 20, seed 0"):
        distillation.shipped_table(20, 0, json_path=path, update=True, log=lambda line: None)
