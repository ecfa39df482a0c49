"""Evaluation and studies: a restored checkpoint (or an ensemble of them) scored on held-out
scans with the clinical metrics, intervals, referral curves, subgroups, report and gallery;
another data set beside the run's own test split; and the summaries of a sweep's jobs.

    held_out     ``evaluate_run``: one checkpoint on a split or another data set
    ensembles    ``evaluate_ensemble``: several runs as one model; out-of-fold scores
    shift        another data set beside the in-domain test split; rebalancing
    summaries    a multirun's summary.csv/.md/.png (``python -m retina.sweep``)
    aggregation  the seeds and folds of one configuration grouped (mean, sd, t-interval)
    comparison   paired differences of jobs on the same test scans

It may import the other jobs' packages below it (``uncertainty``, ``explanations``,
``reports``) and the layers under them (``inference``, ``data``, ``models``, ``checkpoint``,
``metrics``, the foundations); never ``training`` or an entry point.
"""
