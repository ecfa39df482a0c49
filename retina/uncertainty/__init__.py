"""Uncertainty and referral: sampled predictions, ensembles of runs, and the referral policy
that sends an uncertain scan to a specialist.

    sampling   MC dropout of the head, the four flips, ensemble members; their TF twins for
               the SavedModel
    ensemble   the member runs of an ensemble (listed, or a sweep's finished jobs)
    referral   per-scan uncertainty columns, referral metrics, ``referral.json``

It may import ``inference``, ``data``, ``models``, ``checkpoint``, ``metrics`` and the
foundations; no other job package, never ``training`` or an entry point.
"""
