"""The data: 2-D toy sets, image datasets, and batches on the device.

    toy      2-D datasets: swiss roll, moons, 8 gaussians, checkerboard
    images   MNIST, CIFAR-10 and image folders as tensors in [-1, 1]; sample grids as PNG
    loader   the whole dataset on the GPU when it fits; random batches from it
    latents  a dataset encoded once by an autoencoder (posterior means, cached), scaled to unit variance
             by the whole training set's 1 / std: the data of latent diffusion
"""
