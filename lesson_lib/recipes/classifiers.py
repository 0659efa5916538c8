"""mnist_classifier and cifar10_classifier: the judges of :mod:`lesson_lib.evaluation.judges` and the
feature networks of FID (:mod:`lesson_lib.evaluation.fid`).

They are trained by their own loop, :func:`lesson_lib.training.classifier_fit.fit_classifier` (SGD with
Nesterov momentum and the one-cycle schedule, label smoothing, BatchNorm: not the diffusion Trainer's
recipe), for CIFAR-10 with random crops and flips. That loop writes no checkpoint mid-run: the run
saves the trained network in its folder at the end, so the same command again exports it without
training again, while an interrupted run starts over (minutes: 5 on one CPU thread for MNIST, 13 s on
an H200 for CIFAR-10). ``export`` ships fp16 weights and measures the test accuracy of exactly those.
"""

import os

import torch

from ..models.classifiers import build_classifier
from ..pretrained import fp16_weights
from ..training.checkpoint import load_checkpoint, save_checkpoint
from ..training.classifier_fit import evaluate_accuracy, fit_classifier
from .run import Recipe

CI = dict(epochs=1, batch_size=16, n_train=64, n_test=64)
SETTINGS = {
    "mnist": {"full": dict(epochs=4, batch_size=128, lr=0.1, seed=0, augment=False, threads=1),
              "ci": dict(lr=0.1, seed=0, augment=False, **CI)},
    "cifar10": {"full": dict(epochs=16, batch_size=512, lr=0.2, seed=0, augment=True),
                "ci": dict(lr=0.2, seed=0, augment=True, **CI)},
}
DESCRIPTIONS = {
    "mnist": "The course's MNIST classifier (three conv layers with BatchNorm, a 128-unit feature layer, dropout): "
             "it judges samples by class accuracy, and its features are the feature space of FID and KID on MNIST.",
    "cifar10": "The course's CIFAR-10 classifier (a ResNet-ish net, widths 64-128-256-512, 512 features): it judges "
               "samples by class accuracy, and its features are the feature space of FID and KID on CIFAR-10.",
}


def train(run):
    """Fit the classifier, or read back the one this folder holds; returns ``(model, result)``."""
    s, path = run.settings, run.path("classifier.pt")
    run.own_files[os.path.realpath(path)] = "checkpoint"
    torch.manual_seed(s["seed"])
    model = build_classifier(run.recipe.dataset)
    if path.exists():
        state = load_checkpoint(path)
        model.load_state_dict(state["model"])
        run.log(f"training: read back the finished classifier from {path}")
        return model.eval(), state["result"]
    x_train, y_train = run.images("train", as_uint8=False)
    x_test, y_test = run.images("test", as_uint8=False)
    device = run.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with run.clock():
        result = fit_classifier(model, x_train, y_train, x_test, y_test, epochs=s["epochs"], batch_size=s["batch_size"],
                                lr=s["lr"], augment=s["augment"], device=device, progress=run.progress, seed=s["seed"])
    result = {"final_train_loss": sum(result["losses"][-20:]) / len(result["losses"][-20:]),
              "n_train": len(x_train), "n_test": len(x_test)}
    save_checkpoint({"model": model.state_dict(), "result": result}, path)
    return model, result


def export(run, trained, weights_dir, overwrite=False):
    model, result = trained
    s, dataset = run.settings, run.recipe.dataset
    weights = fp16_weights(model.state_dict())
    shipped = build_classifier(dataset)                       # the weights as they load: fp16, back in float32
    shipped.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    shipped.to(next(model.parameters()).device)
    x_test, y_test = run.images("test", as_uint8=False)
    evaluation = {"test_accuracy": evaluate_accuracy(shipped, x_test, y_test),
                  "final_train_loss": result["final_train_loss"]}
    card = run.card(run.recipe.name, "classifier", DESCRIPTIONS[dataset], model, evaluation, weights_dir,
                    architecture=type(model).__name__, feature_dim=model.feature_dim, dtype="float16",
                    epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"], seed=s["seed"],
                    n_train=result["n_train"], n_test=result["n_test"], settings=s)
    return [run.save(weights, weights_dir, run.recipe.name, card, overwrite)]


RECIPES = (Recipe("mnist_classifier", "mnist", ("mnist_classifier",), SETTINGS["mnist"], train, export,
                  "the MNIST judge and FID features: SGD, one-cycle, 4 epochs on one CPU thread"),
           Recipe("cifar10_classifier", "cifar10", ("cifar10_classifier",), SETTINGS["cifar10"], train, export,
                  "the CIFAR-10 judge and FID features: SGD, one-cycle, crops and flips, 16 epochs on a GPU"))
