"""Serving: a trained run applied to new scans and packaged for use elsewhere.

    unlabeled   ``predict_scans``: unlabeled scans through the run's preprocessing and model,
                with decisions, uncertainty and overlays (``python -m retina.predict``)
    artifacts   ``export_run``: a SavedModel or ``.keras`` file, ``serving.json`` and the model
                card (``python -m retina.export``)

It may import ``uncertainty``, ``explanations``, ``reports`` and the layers below them;
never ``training``, ``evaluation`` or an entry point.
"""
