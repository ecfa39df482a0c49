"""The quality gate before every grade: is a scan gradable, ungradable (and why) or not a
colour fundus photograph at all?

    measures   cheap image checks in TensorFlow on the preprocessed scan (field of view,
               brightness, sharpness, dark surround, colour): the rules and part of the
               not-a-fundus distance
    gate       the gate's fitted state (``GateParams``), the verdict of a batch in
               TensorFlow (the same function predict, evaluate, explain and the exported
               SavedModel run), the verdict names and reasons
    fit        fitting at training time: the pooled features' principal axes, the
               distances to the training scans, the learnt quality score (a logistic
               regression on the graders' gradable labels), thresholds on validation
    scoring    the gate over cached scans: one row per scan (verdict, reasons, score,
               distance), the withheld rows and their decision
    summary    what an evaluation reports: verdict counts, the share withheld per site, the
               learnt score's AUC against the graders' label, the rules' sensitivity and
               specificity

It sits beside ``inference``: it imports ``data``, ``models``, ``checkpoint`` and ``metrics``,
never a job package; training, evaluation, serving and explanations import it.
"""
