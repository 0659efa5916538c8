"""The networks: they map (x_t, t[, y]) to a prediction, and never import the diffusion maths.

    base          what every network shares: the recorded config, from_config, prediction, num_classes,
                  data_shape, and the input checks (check_inputs)
    embeddings    the sinusoidal time embedding
    layers        the shared layers: time and class embeddings (with the null class), ResBlock,
                  attention, down/up-sampling, group_norm, zero_init
    mlp           a small MLP denoiser for 2-D data
    unet          the U-Net denoiser for images, and its presets (built from layers)
    classifiers   the course's MNIST and CIFAR-10 classifiers (FID features, class accuracy)
    noisy_classifier  f_phi(y | x_t, t), the U-Net's down path (from layers) with a head: the guide
                  of classifier guidance
    autoencoder   the KL-regularised autoencoder of latent diffusion (from layers): encode(x) -> (mean,
                  logvar), decode(z), downsampling factor f in {1, 2, 4}
    dit           the Diffusion Transformer (from layers): patchify, adaLN-Zero blocks, the paper's
                  presets DiT-S/2 ... DiT-XL/8 and a tiny one for MNIST, the closed-form parameter count
"""

from .base import MODEL_CLASSES  # noqa: F401  (the registry that checkpoints are loaded through)
from . import autoencoder, classifiers, dit, mlp, noisy_classifier, unet  # noqa: F401,E402  (importing them registers their classes)
