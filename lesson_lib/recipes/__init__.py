"""Recipes: how every shipped model in ``lesson_lib/weights/`` is made, each by one command.

    python -m lesson_lib.train --recipe NAME [--profile ci|full] [--out RUN_DIR] [--export WEIGHTS_DIR]

A recipe states its settings as data: the ``full`` profile holds the settings that made the shipped
weights, the ``ci`` profile runs the same code in seconds (tests/test_recipes.py runs every recipe so).
It trains with the course's Trainer where it can (a limit of wall-clock time is the Trainer's
``max_seconds``), starts from a shipped model through :func:`lesson_lib.pretrained.load_pretrained`
where it needs one, resumes from its run folder when run again, and ships through the one writer,
:func:`lesson_lib.pretrained.save_artifact`, with the one card schema of :mod:`lesson_lib.cards`.

Read them in this order:

    run               what every recipe shares: the Recipe record and the run folder (its checkpoints,
                      its clock, the files it shipped), and the fields every card takes from the run
    mnist_cond        mnist_cond: the class-conditional MNIST DDPM (L_simple, label dropout); mnist_dit, lesson 11's DiT
    likelihood        mnist_learned_variance (L_hybrid, from mnist_cond) and mnist_vlb (L_vlb, from it)
    distilled         mnist_v_teacher (mnist_cond re-parameterised to predict v) and mnist_distilled_{1,2,4,8}
                      (progressive distillation of mnist_v_teacher)
    consistency       mnist_consistency: consistency distillation of mnist_v_teacher
    noisy_classifier  mnist_noisy_classifier: the guide of lesson 5
    classifiers       mnist_classifier and cifar10_classifier: the judges and FID's features (SGD, one-cycle)
    autoencoder       mnist_autoencoder and cifar10_autoencoder: the first stage of latent diffusion (squared error + KL)
    latent            mnist_latent, mnist_latent_flow and cifar10_latent: class-conditional models on those latents
    cascade           mnist_base14 and mnist_sr: lesson 12's cascade, a 14-px base and a 14 -> 28 SR model
"""

from . import autoencoder, cascade, classifiers, consistency, distilled, latent, likelihood, mnist_cond, noisy_classifier
from .run import Recipe, Run

RECIPES = {recipe.name: recipe for recipe in (mnist_cond.RECIPE, mnist_cond.DIT, *likelihood.RECIPES,
                                              distilled.TEACHER_RECIPE, distilled.RECIPE, consistency.RECIPE,
                                              noisy_classifier.RECIPE, *classifiers.RECIPES,
                                              *autoencoder.RECIPES, *latent.RECIPES, *cascade.RECIPES)}
"""Every recipe by the name ``--recipe`` takes."""

PROFILES = ("full", "ci")


def recipe(name):
    """The recipe called ``name``; a ValueError lists the known ones."""
    if name not in RECIPES:
        raise ValueError(f"no recipe named {name!r}; the recipes are: " + ", ".join(RECIPES))
    return RECIPES[name]


def recipe_of(shipped):
    """The recipe that makes the shipped model ``shipped`` (e.g. mnist_distilled_4 -> mnist_distilled)."""
    for candidate in RECIPES.values():
        if shipped in candidate.ships:
            return candidate
    raise ValueError(f"no recipe makes a model named {shipped!r}; the recipes make: "
                     + ", ".join(name for r in RECIPES.values() for name in r.ships))


def run_recipe(name, profile="full", out=None, export=None, overwrite=False, data_dir=None, device=None,
               progress=True, log=print):
    """Run recipe ``name`` under ``profile`` in the folder ``out`` (resuming what it holds), then, when
    ``export`` names a folder, ship its models there. Everything that can be refused (the folder, the
    export's files) is refused before training. ``name`` may also be a :class:`Recipe` itself, one not
    registered yet because its weights have not shipped (``recipes.mnist_cond.DIT``). Returns
    ``(run, trained, cards)``."""
    run = Run(name if isinstance(name, Recipe) else recipe(name), profile, out, data_dir, device, progress, log)
    run.check()
    if export is not None:
        run.check_exports(export, overwrite)
    run.start()
    trained = run.recipe.train(run)
    cards = [] if export is None else run.recipe.export(run, trained, export, overwrite)
    return run, trained, cards

