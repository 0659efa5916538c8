"""Judging samples with the course's own classifiers: class accuracy and confidence.

A sample "of class 3" from a class-conditional model should be classified as a 3, with high
confidence (:func:`class_accuracy`). The classifiers (:mod:`lesson_lib.models.classifiers`)
ship trained in ``lesson_lib/weights/``; :func:`load_classifier` checks their hash.
"""

import torch

from ..arguments import images as check_images, labels as check_labels
from ..diffusion.forward import q_sample
from ..models.classifiers import _check_dataset, build_classifier
from ..pretrained import load_artifact


def train_command(dataset):
    """The shell command that trains (and ships) the classifier for ``dataset``: its recipe."""
    return f"python -m lesson_lib.train --recipe {dataset}_classifier --export lesson_lib/weights"


def load_classifier(dataset, device="cpu", weights_dir=None):
    """The shipped, trained classifier for ``dataset``, in float32 and eval mode.

    Reads ``{dataset}_classifier.pt`` and its card ``.json`` from ``weights_dir`` (default:
    ``lesson_lib/weights``) through :func:`lesson_lib.pretrained.load_artifact`, which checks
    the sha256 and loads with ``weights_only=True``; the weights are cast to float32. The returned model carries ``info``
    (the sidecar dict) and ``name`` (architecture and hash prefix, used in metric reports).
    """
    _check_dataset(dataset)
    state, info = load_artifact(f"{dataset}_classifier", weights_dir,
                                hint=f"reinstall lesson_lib or retrain with: {train_command(dataset)}")
    model = build_classifier(dataset)
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
    model.info = info
    model.name = f"{info.get('architecture', type(model).__name__)}[{info['sha256'][:8]}]"
    return model.to(device).eval()


# ----------------------------------------------------------------------------- judging samples

@torch.no_grad()
def classify(images, dataset="mnist", classifier=None, batch_size=500, device=None):
    """Predicted labels and confidences (the softmax probability of the predicted class).

    ``images`` are in [-1, 1], shape (N, C, H, W) (uint8 or 0..255 images are refused: a
    classifier trained on [-1, 1] calls them all one class, confidently). Uses the shipped
    classifier for ``dataset`` unless ``classifier`` is given. Returns ``(labels (N,) long,
    confidence (N,) float32)``.
    """
    check_images(images, "images", ndim=4)
    if classifier is None:
        classifier = load_classifier(dataset, device=device or "cpu")
    device = torch.device(device) if device is not None else next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    labels, confidence = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device, torch.float32)
        probs = classifier(x).float().softmax(dim=1)
        conf, pred = probs.max(dim=1)
        labels.append(pred.cpu())
        confidence.append(conf.cpu())
    classifier.train(was_training)
    return torch.cat(labels), torch.cat(confidence)


def class_accuracy(images, labels, dataset="mnist", classifier=None, batch_size=500, device=None):
    """Class accuracy and confidence of generated samples of a class-conditional model.

    ``labels`` are the classes the samples were conditioned on (an integer tensor, one per image).
    Returns a dict with ``accuracy`` (fraction classified as their label), ``mean_confidence``
    (mean softmax probability of the predicted class) and ``n``.
    """
    check_images(images, "images", ndim=4)
    num_classes = getattr(classifier, "num_classes", 10)          # both shipped datasets have 10
    labels = check_labels(labels, num_classes, "labels", batch=len(images),
                          hint=f"one label per image, the class each of the {len(images)} was sampled for")
    labels = labels.long().cpu()
    predicted, confidence = classify(images, dataset, classifier, batch_size, device)
    return dict(accuracy=(predicted == labels).float().mean().item(),
                mean_confidence=confidence.mean().item(), n=len(labels))



@torch.no_grad()
def accuracy_against_t(classifier, schedule, images, labels, timesteps, seed=0, uses_t=True,
                       batch_size=500, device=None):
    """The accuracy of ``classifier`` on noisy images x_t = q_sample(x_0, t), one figure per t.

    ``images`` (N, C, H, W) in [-1, 1] and their ``labels`` (N,); ``timesteps`` are code
    timesteps. The same noise eps (drawn once from ``seed``) is used at every t, so the figures
    differ only by the noise level. A noisy classifier is called as ``classifier(x_t, t)``; a
    clean one (``uses_t=False``, e.g. :func:`load_classifier`'s) as ``classifier(x_t)``, which
    shows what a classifier that never saw noise makes of the sampler's intermediate states.
    Returns a list of accuracies, one per timestep.
    """
    device = torch.device(device) if device is not None else next(classifier.parameters()).device
    labels = torch.as_tensor(labels).long()
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    was_training = classifier.training
    classifier.eval()
    schedule = schedule.to(device)
    accuracies = []
    for t in timesteps:
        correct = 0
        for i in range(0, len(images), batch_size):
            x0 = images[i:i + batch_size].to(device, torch.float32)
            t_batch = torch.full((len(x0),), int(t), device=device, dtype=torch.long)
            x_t = q_sample(schedule, x0, t_batch, eps[i:i + batch_size].to(device))
            logits = classifier(x_t, t_batch) if uses_t else classifier(x_t)
            correct += (logits.argmax(dim=1).cpu() == labels[i:i + batch_size]).sum().item()
        accuracies.append(correct / len(images))
    classifier.train(was_training)
    return accuracies
