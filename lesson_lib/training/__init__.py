"""Training: one loop for every model, and what keeps it safe.

    trainer          the Trainer: objective, AdamW, warm-up, EMA, bf16, NaN guard, resumable
    ema              the exponential moving average of the weights
    checkpoint       resumable checkpoints, written atomically and loaded safely
    profiles         the same training at three sizes: ci, cpu, gpu
    classifier_fit   the recipe that trains the course's own classifiers (SGD, one-cycle)
"""
