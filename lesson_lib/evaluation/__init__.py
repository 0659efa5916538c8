"""Measuring samples: the numbers beside every claim the lessons make.

    metrics   sample quality for 2-D data against its data-vs-data floor; nearest neighbours; PSNR
    fid       FID and KID on a feature network, and the real-data floor at the same n
    judges    class accuracy of generated samples by the course's own classifiers
"""
