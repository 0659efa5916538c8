#!/usr/bin/env python3
"""Classifier guidance and classifier-free guidance on the shipped MNIST model, side by side.

    OMP_NUM_THREADS=1 python benchmarks/guidance.py [--n 200] [--steps 25] [--json docs/guidance_benchmark.json]
    python benchmarks/guidance.py --n 5000 --large --threads 2 --json docs/guidance_table_n5000.json [--arms cfg0 cg1]

For every guidance strength, ``n`` samples (n/10 per class, the same starting noise for every
row, so that rows differ only by the guidance) are drawn with DDIM (eta = 0, x0 clipped to
[-1, 1] after the guidance) from ``mnist_cond`` and measured:

* FID and KID against n MNIST test images, on the course classifier's features, next to the
  real-data floor (n train vs n test images);
* class accuracy, judged by the course's clean MNIST classifier (``mnist_classifier``), which
  did not take part in the guidance (the guide is ``mnist_noisy_classifier``);
* diversity: the mean feature distance between two samples of the same class
  (:func:`lesson_lib.evaluation.metrics.within_class_spread`), with the real test images'
  value at the same n beside it;
* samples/s on this machine.

Rows: classifier-free guidance at weights w (w = 0 is the conditional model); classifier
guidance at scales s on the model's *unconditional* output (its null class; s = 0 is the
unconditional model); classifier guidance on the *conditional* model (Dhariwal & Nichol's ADM-G,
``ClassifierGuidance(..., condition_model=True)``); and the mean form (``ClassifierGuidedStep``, the step of strided DDPM, on
the unconditional model) with the gradient at x_t (the default) and at the mean (the paper's
derivation), with paired noise, to measure that choice. Its mu comes from the clipped x0_hat and
the shift s Sigma g is not clipped, as in the authors' code (before the mean form became a step,
the shifted x0_hat was clipped: rows recorded then differ).

CIFAR-10 would need a CIFAR-10 noisy classifier, which the course does not ship (its class-conditional
CIFAR-10 model, ``cifar10_latent``, is guided classifier-free in lesson 10), so the script says so and
measures MNIST only. Recorded figures: docs/benchmarks.md, and (with
``--card``) the guide's model card, from which lesson 5 reads the table (n = 200). ``--large``
measures with benchmarks/sample_size.py instead (FID_inf and FID at smaller n beside the floor's,
each arm's samples kept so a cut-short run resumes) and writes only ``--json``
(docs/guidance_table_n2000.json and docs/guidance_table_n5000.json; docs/benchmarks.md, section 10).
"""
import argparse
import json
import re
import time

import torch

from lesson_lib.cards import hardware
from lesson_lib.data.images import load_mnist
from lesson_lib.diffusion.guidance import ClassifierFreeGuidance, ClassifierGuidance, ClassifierGuidedStep
from lesson_lib.diffusion.sampling import ddpm_sample
from lesson_lib.diffusion.timesteps import spaced
from lesson_lib.evaluation.fid import compute_metrics, extract_features, real_floor
from lesson_lib.evaluation.judges import class_accuracy, load_classifier
from lesson_lib.evaluation.metrics import within_class_spread
from lesson_lib.pretrained import WEIGHTS_DIR, available, load_noisy_classifier, load_pretrained, model_card, write_card
from lesson_lib.sample import generate

CFG_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
CG_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0)
ADM_G_SCALES = (1.0, 2.0, 4.0, 8.0)
ABLATION_SCALE = 4.0
METHODS = {"cfg": "classifier-free, w", "cg": "classifier, s, unconditional model",
           "admg": "classifier, s, conditional model (ADM-G)"}


def cfg(w):
    return lambda d: ClassifierFreeGuidance(d, w)


def cg(guide, s, condition_model=False):
    return lambda d: ClassifierGuidance(d, guide, s, condition_model=condition_model, dataset="mnist")


def arms(steps):
    """Every row of the table, in the default order: ``[(key, method, strength)]``; ``--arms KEY ...`` picks and
    orders them (e.g. ``cfg0 cg0 cg1``)."""
    rows = [(f"cfg{w:g}", METHODS["cfg"], w) for w in CFG_WEIGHTS]
    rows += [(f"cg{s:g}", METHODS["cg"], s) for s in CG_SCALES]
    rows += [(f"admg{s:g}", METHODS["admg"], s) for s in ADM_G_SCALES]
    rows += [(f"mean_{at}", f"classifier mean form, DDPM-{steps}, grad at {at}", ABLATION_SCALE) for at in ("x_t", "mean")]
    return rows


def measure(images, labels, seconds, judge, data_dir, device):
    """Every figure of one row of the table (n = len(images), the floor read at the same n)."""
    metrics = compute_metrics(images, dataset="mnist", extractor=judge, data_dir=data_dir, device=device)
    accuracy = class_accuracy(images, labels, classifier=judge, device=device)
    features = extract_features(images, judge, device=device)
    return dict(fid=metrics["fid"], kid=metrics["kid_mean"], accuracy=accuracy["accuracy"],
                diversity=within_class_spread(features, labels), samples_per_s=len(images) / seconds)


def draw_arm(key, model, schedule, guide, n, steps, seed, device, batch=100):
    """The n samples of one arm (labels 0..9 in turn), in batches; batch i starts from seed + i, so every arm
    starts from the same x_T (and the mean form's step noise is paired between its two rows)."""
    labels = torch.arange(10).repeat(n // 10 + 1)[:n]
    timesteps = spaced(schedule.T, steps)
    out = []
    for i in range(0, n, batch):
        y = labels[i:i + batch]
        if key.startswith("mean_"):              # no y in model_kwargs: the model's unconditional output is guided
            step = ClassifierGuidedStep(guide, ABLATION_SCALE, y.to(device), gradient_at=key[5:], dataset="mnist")
            x = ddpm_sample(model, schedule, (len(y), 1, 28, 28), clip_x0=True, device=device, progress=False,
                            timesteps=timesteps, generator=torch.Generator(device).manual_seed(seed + i), step=step)
        else:
            kind, strength = re.fullmatch(r"(cfg|cg|admg)([0-9.]+)", key).groups()
            guidance = cfg(float(strength)) if kind == "cfg" else cg(guide, float(strength), condition_model=kind == "admg")
            x = generate(model, schedule, len(y), "ddim", steps, {"y": y}, device, seed + i, False, guidance)
        out.append(x.cpu())
    return torch.cat(out), labels


def sample_rows(model, schedule, guide, judge, n, steps, seed, data_dir, device, log=print, keys=None, batch=100):
    """The rows of ``keys`` (default: all of :func:`arms`), each measured by :func:`measure`."""
    labels = torch.arange(10).repeat(n // 10 + 1)[:n]
    table = {key: (method, strength) for key, method, strength in arms(steps)}
    rows = []
    for key in keys or list(table):
        start = time.perf_counter()
        images, _ = draw_arm(key, model, schedule, guide, n, steps, seed, device, batch)
        method, strength = table[key]
        r = dict(method=method, strength=strength,
                 **measure(images, labels, time.perf_counter() - start, judge, data_dir, device))
        rows.append(r)
        log(format_row(r))
    return rows


def large_n_rows(model, schedule, guide, n, steps, seed, data_dir, device, keys, batch, log, partial):
    """The rows of ``keys`` measured by benchmarks/sample_size.py (FID and KID at n beside the floor at n, FID at
    smaller n, FID_inf, accuracy) with the diversity of :func:`measure`; each arm's samples are kept."""
    from sample_size import Reference, cached, measure as measure_all, rounded, verdict

    reference = Reference(data_dir, device)
    floor = reference.floor(n)
    log(f"real-vs-real floor at n = {n}: FID {floor['fid']:.3f}, KID {floor['kid']:.5f}, "
        f"FID_inf {floor['fid_infinity']:.3f}")
    table = {key: (method, strength) for key, method, strength in arms(steps)}
    rows = []
    for key in keys:
        images, labels, seconds = cached(f"mnist_cond-guidance-{key}-ddim{steps}-n{n}-seed{seed}-batch{batch}",
                                         lambda: draw_arm(key, model, schedule, guide, n, steps, seed, device, batch))
        method, strength = table[key]
        r = dict(key=key, method=method, strength=strength, **measure_all(images, labels, reference, seconds))
        r["diversity"] = within_class_spread(extract_features(images, reference.judge, device=device), labels)
        rows.append(rounded(r))
        partial(rounded(floor), rows)
        log(f"{key:>8}: {verdict(r, floor)}, diversity {r['diversity']:.2f}")
    return floor, rows


HEADER = (f"{'method':<46} {'strength':>8} {'FID':>7} {'KID':>8} {'accuracy':>8} {'diversity':>9} "
          f"{'samples/s':>9}")


def format_row(r):
    return (f"{r['method']:<46} {r['strength']:>8.2f} {r['fid']:>7.2f} {r['kid']:>8.4f} {r['accuracy']:>8.3f} "
            f"{r['diversity']:>9.2f} {r['samples_per_s']:>9.2f}")


def real_spread(n, seed, data_dir, device):
    """The within-class spread of n random test images (n/10 per class), the diversity of real digits at n."""
    judge = load_classifier("mnist", device=device)
    test_x, test_y = load_mnist("test", data_dir=data_dir)
    order = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(seed))
    pick = torch.cat([order[test_y[order] == k][:n // 10] for k in range(10)])    # n/10 per class
    return within_class_spread(extract_features(test_x[pick], judge, device=device), test_y[pick])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="samples per row (a multiple of 10)")
    p.add_argument("--steps", type=int, default=25, help="DDIM (and strided DDPM) steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="directory holding mnist.npz (else $DDPM_DATA_DIR)")
    p.add_argument("--json", default=None, help="also write the table and its settings here")
    p.add_argument("--card", action="store_true",
                   help="store the table in the guide's model card (lesson 5 reads it from there)")
    p.add_argument("--arms", nargs="+", default=None, metavar="KEY",
                   help="only these rows, in this order: cfgW, cgS, admgS (the conditional model guided by the "
                        "classifier), mean_x_t, mean_mean (default: all; see arms())")
    p.add_argument("--batch", type=int, default=100, help="samples per sampler call (batch i starts from seed + i)")
    p.add_argument("--large", action="store_true",
                   help="measure with benchmarks/sample_size.py (FID_inf, FID at smaller n, kept samples) and write "
                        "only --json; for n in the thousands")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    known = [key for key, _, _ in arms(args.steps)]
    if args.arms and set(args.arms) - set(known):
        p.error(f"--arms: unknown {sorted(set(args.arms) - set(known))}; choose from {', '.join(known)}")
    if args.large and (args.card or not args.json):
        p.error("--large writes only --json (give --json PATH); the card holds the lesson's table")

    model, schedule = load_pretrained("mnist_cond", device=args.device)
    guide, guide_schedule = load_noisy_classifier("mnist_noisy_classifier", device=args.device)
    if not torch.equal(guide_schedule.betas, schedule.betas):
        raise SystemExit("the noisy classifier was trained under another schedule than mnist_cond")
    if args.large:
        def partial(floor, rows):
            result = dict(dataset="mnist", model="mnist_cond", guide="mnist_noisy_classifier", judge=load_classifier("mnist").name,
                          n=args.n, sampler=f"ddim-{args.steps}, eta=0, x0 clipped after guidance", seed=args.seed,
                          batch=args.batch, device=args.device, hardware=hardware(args.device), torch=torch.__version__,
                          wall_time_s=round(time.perf_counter() - start), floor=floor, fid_floor=floor["fid"],
                          kid_floor=floor["kid"], real_diversity=real_diversity, rows=rows)
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
                f.write("\n")
        real_diversity = round(real_spread(args.n, args.seed, args.data, args.device), 4)
        print(f"MNIST, mnist_cond, n = {args.n} per row, DDIM-{args.steps} eta=0, seed {args.seed}, "
              f"{hardware(args.device)}; diversity of real test images {real_diversity:.2f}", flush=True)
        large_n_rows(model, schedule, guide, args.n, args.steps, args.seed, args.data, args.device,
                     args.arms or known, args.batch, lambda line: print(line, flush=True), partial)
        return
    judge = load_classifier("mnist", device=args.device)
    floor = real_floor("mnist", args.n, extractor=judge, data_dir=args.data, device=args.device)
    real_diversity = real_spread(args.n, args.seed, args.data, args.device)

    print(f"MNIST, mnist_cond, n = {args.n} per row (n/10 per class), DDIM-{args.steps} eta=0, seed {args.seed}, "
          f"{hardware(args.device)}")
    print(f"real-data floor at n = {args.n}: FID {floor['fid']:.2f}, KID {floor['kid_mean']:.4f}; "
          f"diversity of real test images {real_diversity:.2f}; features and judge {judge.name}")
    print(HEADER)
    print("-" * len(HEADER))
    rows = sample_rows(model, schedule, guide, judge, args.n, args.steps, args.seed, args.data, args.device,
                       keys=args.arms, batch=args.batch)
    cifar = [name for name in available("diffusion") if "cifar" in name]
    note = ("no class-conditional CIFAR-10 model (and no CIFAR-10 noisy classifier) ships with the course, "
            "so the CIFAR-10 sweep was not run" if not cifar else
            f"CIFAR-10 diffusion models shipped: {cifar}, but no CIFAR-10 noisy classifier; sweep not run")
    print(f"CIFAR-10: {note}")
    result = dict(dataset="mnist", model="mnist_cond", guide="mnist_noisy_classifier", judge=judge.name,
                  n=args.n, sampler=f"ddim-{args.steps}, eta=0, x0 clipped after guidance", seed=args.seed,
                  device=args.device, hardware=hardware(args.device), threads=torch.get_num_threads(), torch=torch.__version__, wall_time_s=time.perf_counter() - start,
                  fid_floor=floor["fid"], kid_floor=floor["kid_mean"], real_diversity=real_diversity,
                  rows=rows, cifar10=note)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    if args.card:
        card = model_card("mnist_noisy_classifier")
        card["guidance_benchmark"] = result
        write_card(WEIGHTS_DIR / card["file"], card)


if __name__ == "__main__":
    main()
