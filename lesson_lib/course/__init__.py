"""Course tooling for instructors and notebooks; nothing else in the library imports it.

    plotting      small matplotlib helpers for the lessons
    assignments   exercise notebooks generated from the solution notebooks
    checks        the automatic checks of each lesson's exercises (judging: what they share)
    grader        grading a submission: lesson-lib-grade (or python -P -m lesson_lib.course.grader)
    batch         grading a folder of submissions: lesson-lib-grade-class
    notebook      reading a submission: the definitions the grader may run, and notes
    reader        the notebook read in a memory-limited process (parsing can take gigabytes)
    protocol      the plain data and messages that cross from the worker to the grader
    sandbox       bubblewrap and process limits around the worker
    session       one submission's workers, followed under one time budget
    worker        the only process that runs student code
    box           the fence inside the worker: references taken away, files, processes and signals refused
    flags         what an instructor may want to look at (not verdicts)
    feedback      the checks of one exercise, run in the student's notebook (feedback, not grading)
"""
