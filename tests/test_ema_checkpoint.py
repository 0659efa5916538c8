"""The EMA of the weights, and checkpoints that are atomic, safe to load and self-checking."""

import os
import pickle

import pytest
import torch
from torch import nn

import lesson_lib.training.checkpoint as checkpoint_module
from lesson_lib.training.checkpoint import check_config, load_checkpoint, save_checkpoint
from lesson_lib.training.ema import EMA


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def params(model):
    return [p.detach().clone() for p in model.parameters()]


# --- EMA ----------------------------------------------------------------------------------

def test_ema_update_follows_the_formula_with_warmup():
    model = small_net()
    ema = EMA(model, decay=0.9)
    avg = params(model)
    for n in range(90):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        d = min(0.9, (1 + n) / (10 + n))                       # warm-up: 0.1, 0.18, ..., 0.9 from n = 80
        assert ema.current_decay() == pytest.approx(d)
        ema.update(model)
        avg = [d * a + (1 - d) * p for a, p in zip(avg, params(model))]
        for a, e in zip(avg, ema.model.parameters()):
            torch.testing.assert_close(e, a, rtol=1e-5, atol=1e-6)
    assert ema.num_updates == 90
    assert ema.current_decay() == 0.9


def test_ema_copies_buffers_and_is_frozen():
    model = small_net()
    ema = EMA(model, decay=0.99)
    assert not ema.model.training
    assert all(not p.requires_grad for p in ema.model.parameters())
    assert all(p.requires_grad for p in model.parameters())     # the original is untouched
    model.train()
    model(torch.randn(16, 3) + 5)                              # moves the batch-norm statistics
    ema.update(model)
    bn, bn_ema = model[1], ema.model[1]
    assert torch.equal(bn_ema.running_mean, bn.running_mean)
    assert torch.equal(bn_ema.running_var, bn.running_var)
    assert bn_ema.num_batches_tracked.item() == 1
    # parameters are averaged, not copied
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    assert not torch.equal(ema.model[0].weight, model[0].weight)


def test_ema_state_dict_round_trip(tmp_path):
    model = small_net()
    ema = EMA(model, decay=0.95)
    for _ in range(3):
        with torch.no_grad():
            model[0].weight.add_(0.5)
        ema.update(model)
    save_checkpoint({"ema": ema.state_dict()}, tmp_path / "ema.pt")
    other = EMA(small_net(seed=1), decay=0.5)
    other.load_state_dict(load_checkpoint(tmp_path / "ema.pt")["ema"])
    assert other.decay == 0.95 and other.num_updates == 3
    for a, b in zip(ema.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b)
    # the restored EMA continues exactly as the original would
    ema.update(model)
    other.update(model)
    for a, b in zip(ema.model.parameters(), other.model.parameters()):
        assert torch.equal(a, b)


def test_ema_errors():
    for decay in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="decay"):
            EMA(small_net(), decay=decay)
    ema = EMA(small_net())
    with pytest.raises(ValueError, match="different architecture"):
        ema.update(nn.Linear(3, 2))


# --- checkpoints -----------------------------------------------------------------------------

def test_save_and_load_round_trip(tmp_path):
    state = {"step": 7, "w": torch.arange(5.0), "config": {"lr": 1e-3, "name": "mlp"}, "history": [[1, 0.5]]}
    path = tmp_path / "sub" / "ckpt.pt"                        # the folder is created
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["config"] == state["config"] and loaded["history"] == [[1, 0.5]]
    assert torch.equal(loaded["w"], state["w"])
    assert os.listdir(path.parent) == ["ckpt.pt"]              # no temporary file left behind
    save_checkpoint({"step": 8}, str(path))                    # overwrite, with a str path
    assert load_checkpoint(str(path)) == {"step": 8}


def test_save_is_atomic(tmp_path, monkeypatch):
    """A crash in the middle of writing leaves the previous checkpoint intact and no litter."""
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):
        real_save({"step": 2, "w": torch.zeros(1000)}, f)      # some bytes reach the file ...
        raise OSError("disk full")                             # ... then the write fails
    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_keyboard_interrupt_mid_write_leaves_no_litter(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint_module.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    assert os.listdir(tmp_path) == []


SIDE_EFFECTS = []


def _record_side_effect(message):
    SIDE_EFFECTS.append(message)
    return message


class Payload:
    """Unpickling this runs code: what a malicious checkpoint would do."""

    def __reduce__(self):
        return (_record_side_effect, ("code ran while loading",))


def test_load_uses_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"step": 1, "payload": Payload()}, path)         # written without the safe saver
    SIDE_EFFECTS.clear()
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    assert SIDE_EFFECTS == []                                  # the code never ran
    # (an unrestricted torch.load would have run it: the test is not vacuous)
    torch.load(path, weights_only=False)
    assert SIDE_EFFECTS == ["code ran while loading"]


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def test_check_config_lists_differing_keys():
    check_config({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 2]})  # equal: no error
    with pytest.raises(ValueError) as info:
        check_config({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4}, "model configuration")
    message = str(info.value)
    assert "different model configuration" in message
    assert "b: checkpoint has 2, now 5" in message
    assert "c: checkpoint has 3, now '<missing>'" in message
    assert "d: checkpoint has '<missing>', now 4" in message
    assert "a:" not in message
