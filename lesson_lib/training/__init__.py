"""Training: one loop for every model, and what keeps it safe.

    trainer          the Trainer: objective, AdamW, warm-up, EMA, bf16, NaN guard, resumable
    distributed      the same Trainer on several processes (torchrun): who is who, a few collectives
    ema              the exponential moving average of the weights
    checkpoint       resumable checkpoints, written atomically and loaded safely
    profiles         the same training at three sizes: ci, cpu, gpu
    classifier_fit   the recipe that trains the course's own classifiers (SGD, one-cycle)
    noisy_classifier_fit  the recipe of lesson 5's noisy classifier
    distill          progressive distillation: one Trainer per halving
"""
