"""Explanations: where on a scan a model found its evidence, checked so the maps can fail.

    saliency       Grad-CAM and occlusion maps
    sanity_checks  the lesion-mass and model-randomisation checks, and their runner
    overlays       maps drawn over the scans, the failure gallery, ``explain_run``
                   (``python -m retina.explain``'s work)

It may import ``inference``, ``data``, ``models``, ``checkpoint``, ``metrics`` and the
foundations; no other job package, never ``training`` or an entry point.
"""
