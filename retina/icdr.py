"""The International Clinical Diabetic Retinopathy (ICDR) scale the whole project grades on.

Grades 0-4; *referable* DR is grade >= 2 (moderate NPDR or worse), the line at which a
screening programme refers a patient to an ophthalmologist.
"""

import numpy as np

NUM_GRADES = 5
REFERABLE_MIN_GRADE = 2
GRADE_NAMES = ("No DR", "Mild", "Moderate", "Severe", "Proliferative")
BINARY_NAMES = ("Not referable", "Referable")
# Where the grades meet on a numeric scale (a regressed or expected grade): a score's grade
# is how many of these it exceeds.
GRADE_BOUNDARIES = (0.5, 1.5, 2.5, 3.5)


def grades_at(scores, boundaries=GRADE_BOUNDARIES) -> np.ndarray:
    """The grade of each numeric score: how many of the (sorted) ``boundaries`` it exceeds."""
    return (np.asarray(scores)[:, None] > np.sort(np.asarray(boundaries))[None, :]).sum(axis=1)
