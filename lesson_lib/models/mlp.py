"""A small MLP denoiser for 2-D data.

The network eps_theta(x_t, t) must know the noise level, so the timestep enters through
the sinusoidal embedding (see :mod:`lesson_lib.models.embeddings`) followed by a small MLP, and is
added to the hidden state of every residual block (the same pattern as the U-Net's ResNet
blocks, without convolutions).
"""

from torch import nn

from .base import Model, check_prediction
from .embeddings import sinusoidal_embedding


class ResidualMLPBlock(nn.Module):
    """h + W2 SiLU(W1 LayerNorm(h) + time_emb): one block of the denoiser."""

    def __init__(self, hidden):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h, emb):
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h)) + emb))


class MLPDenoiser(Model):
    """eps_theta(x_t, t) for points in ``dim`` dimensions.

    Args:
        dim: data dimension (2 for the toy datasets).
        hidden: width of every hidden layer.
        num_blocks: number of residual blocks.
        time_dim: size of the sinusoidal embedding of t.
        prediction: what the output means ("eps", "x0" or "v"); read by training and sampling.
    """

    def __init__(self, dim=2, hidden=128, num_blocks=3, time_dim=32, prediction="eps"):
        super().__init__()
        check_prediction(prediction)
        self.prediction = prediction
        self.in_channels = dim
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualMLPBlock(hidden) for _ in range(num_blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x, t, y=None):
        self.check_inputs(x, t, y)      # x of shape (B, dim); unconditional, so y must be None
        emb = self.time_mlp(sinusoidal_embedding(t, self.time_dim))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
