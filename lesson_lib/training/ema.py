"""Exponential moving average (EMA) of model weights.

Ho et al. (2020, Appendix B) sample from an EMA of the weights with decay 0.9999: the
average over the last ~1/(1 - decay) steps smooths out the noise of stochastic gradient
descent, and gives visibly better samples than the raw weights.

    theta_ema <- decay * theta_ema + (1 - decay) * theta

Early in training an average over 10,000 steps would be dominated by the random
initialisation, so the decay is warmed up as min(decay, (1 + n) / (10 + n)) after n updates
(the schedule of TensorFlow's ExponentialMovingAverage with ``num_updates``).
"""

import copy

import torch


class EMA:
    """Keeps ``self.model``, an averaged copy of a model, up to date with :meth:`update`."""

    def __init__(self, model, decay=0.9999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got decay={decay}")
        self.decay = decay
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self):
        """The decay used by the next update, after the warm-up."""
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model):
        """theta_ema <- d * theta_ema + (1 - d) * theta, for every parameter; buffers
        (e.g. batch-norm statistics) are copied."""
        d = self.current_decay()
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise ValueError("the model given to EMA.update has a different architecture from the averaged one")
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.num_updates += 1

    def state_dict(self):
        return {"model": self.model.state_dict(), "decay": self.decay, "num_updates": self.num_updates}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
