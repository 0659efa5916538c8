"""The data: 2-D toy sets, image datasets, and batches on the device.

    toy      2-D datasets: swiss roll, moons, 8 gaussians, checkerboard
    images   MNIST, CIFAR-10 and image folders as tensors in [-1, 1]; sample grids as PNG
    loader   the whole dataset on the GPU when it fits; random batches from it
"""
