"""The International Clinical Diabetic Retinopathy (ICDR) scale the whole project grades on.

Grades 0-4; *referable* DR is grade >= 2 (moderate NPDR or worse), the line at which a
screening programme refers a patient to an ophthalmologist.
"""

NUM_GRADES = 5
REFERABLE_MIN_GRADE = 2
GRADE_NAMES = ("No DR", "Mild", "Moderate", "Severe", "Proliferative")
BINARY_NAMES = ("Not referable", "Referable")
