"""Course tooling for instructors and notebooks; nothing else in the library imports it.

    plotting      small matplotlib helpers for the lessons
    assignments   exercise notebooks generated from the solution notebooks
    checks        the automatic checks of each lesson's exercises
    grader        grading a submission: python -m lesson_lib.course.grader
"""
