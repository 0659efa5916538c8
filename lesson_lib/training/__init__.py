"""Training: one loop for every model, and what keeps it safe.

    trainer          the Trainer: objective, AdamW, warm-up, EMA, bf16, NaN guard, resumable
    distributed      the same Trainer on several processes (torchrun): who is who, a few collectives
    ema              the exponential moving average of the weights
    checkpoint       resumable checkpoints, written atomically and loaded safely
    profiles         the same training at three sizes: ci, cpu, gpu
    classifier_fit   the loop that trains the course's own classifiers (SGD, one-cycle, BatchNorm)
    distill          progressive distillation: one Trainer per halving

What each shipped model was trained with, and the command that makes it, is a recipe of
:mod:`lesson_lib.recipes`; nothing here imports it, nor :mod:`lesson_lib.pretrained`.
"""
