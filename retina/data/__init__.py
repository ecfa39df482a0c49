"""Data: scans on disk to the tf.data stream a model trains on.

    sources, splits      dataset layouts -> the manifest; the patient-level split, folds
    label_tables         one label table -> manifest rows (files found, grades parsed)
    ungradable           the scans the graders could not grade, kept for the quality gate
    images, dicom        any scan file -> 8-bit RGB as a reader would see it
    fundus               fundus image operations (field of view, crop, resize, gradability)
    privacy              pseudonymous scan ids instead of source paths
    ingest, cache        the preprocessing cache, built once, in worker processes
    cache_entry          one scan into the cache (what a worker runs: decoded no finer
                         than the cache needs)
    parallel             offline work over all cores with a progress bar
    prepare              a run's data: its manifest, cached paths, bad inputs
    inputs               ``input=`` scans (folder, CSV, file) through a run's preprocessing
    pipeline, augment    the tf.data streams and their TF-only augmentations
    synthetic/           the built-in screening programme

It imports only the foundations (``config``, ``errors``, ``files``, ``run_dir``, ``icdr``)
and ``metrics``; no job package.
"""
