"""Lesson 3's class-conditional embedding exercise (ConditionalEmbedding): the solution gets every
point of the lesson, and each typical mistake loses the points of the check it breaks, and only those.

Run in this process, without grading workers (as tests/test_grader_lessons34.py does for the
other exercises of lessons 3 and 4); the end-to-end grading of the notebooks is in tests/test_grader.py.
"""

import textwrap

import pytest

from grading_helpers import definitions, expect_rejected
from lesson_lib.course.checks import load_checks

CHECKS = {check.name: check for check in load_checks("03")}
MATCHES, NULL = "conditional_embedding_matches_unet", "conditional_embedding_null_class_without_labels"

EMBEDDING = """
class ConditionalEmbedding(nn.Module):
    def __init__(self, num_classes, dim):
        super().__init__()
        self.num_classes = num_classes
        self.class_embedding = nn.Embedding({rows}, dim)

    def forward(self, time_emb, y=None):
        if y is None:
            y = {null}
        {body}
"""
OK = dict(rows="num_classes + 1", null="torch.full((time_emb.shape[0],), self.num_classes, dtype=torch.long)",
          body="return time_emb + self.class_embedding(y)")


def embedding(**changes):
    return EMBEDDING.format(**{**OK, **changes})


def score(source=None, seed=0):
    """Points per check of lesson 3 for the solution, with ``source`` run over its definitions."""
    namespace = definitions("solutions", "03")
    if source is not None:
        exec(textwrap.dedent(source), namespace)
    points = {}
    for name, check in CHECKS.items():
        try:
            check.fn(namespace, seed=seed)
        except Exception:          # the grader gives 0 points for any failure, a crash included
            points[name] = 0
        else:
            points[name] = check.points
    return points


def test_the_lesson_is_worth_12_points_and_the_new_exercise_3():
    assert sum(check.points for check in CHECKS.values()) == 12
    assert CHECKS[MATCHES].points + CHECKS[NULL].points == 3
    assert CHECKS[MATCHES].uses == CHECKS[NULL].uses == ("ConditionalEmbedding",)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_solution_gets_full_points(seed):
    assert score(seed=seed) == {name: check.points for name, check in CHECKS.items()}
    assert score(embedding(), seed=seed) == {name: check.points for name, check in CHECKS.items()}


MISTAKES = [  # (what the student did, the checks that must fail; every other check keeps its points)
    ("no null row in the table", embedding(rows="num_classes"), {MATCHES, NULL}),
    ("zeros instead of the null row without labels", embedding(null="None", body="return time_emb if y is None "
                                                                    "else time_emb + self.class_embedding(y)"), {NULL}),
    ("row 0 as the null class", embedding(null="torch.zeros(time_emb.shape[0], dtype=torch.long)"), {NULL}),
    ("the last row by index -1", embedding(null="torch.full((time_emb.shape[0],), -1, dtype=torch.long)"), {NULL}),
    ("the class row alone, time forgotten", embedding(body="return self.class_embedding(y)"), {MATCHES, NULL}),
    ("concatenated, not added", embedding(body="return torch.cat([time_emb, self.class_embedding(y)], dim=1)"),
     {MATCHES, NULL}),
    ("added in place to the caller's time_emb", embedding(body="time_emb += self.class_embedding(y)\n"
                                                               "        return time_emb"), {MATCHES, NULL}),
    ("one null label instead of one per example",
     embedding(null="torch.tensor([self.num_classes])"), set()),        # broadcasts to the right answer
]


@pytest.mark.parametrize("source, failing", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_each_mistake_loses_the_points_of_the_checks_it_breaks(source, failing):
    points = score(source)
    assert {name for name, p in points.items() if p == 0} == failing
    assert sum(points.values()) == 12 - sum(CHECKS[name].points for name in failing)


def test_a_table_without_the_null_row_is_told_why():
    expect_rejected("03", MATCHES, embedding(rows="num_classes")).match("null class")


def test_zeros_for_no_label_get_the_null_class_hint():
    source = embedding(null="None", body="return time_emb if y is None else time_emb + self.class_embedding(y)")
    expect_rejected("03", NULL, source).match("Not zeros, not row 0")


def test_an_in_place_sum_is_named():
    source = embedding(body="time_emb += self.class_embedding(y)\n        return time_emb")
    expect_rejected("03", MATCHES, source).match("in place")
