"""The benchmarks of ``python scripts/benchmark.py <name>``, one module each.

    checkpoint   save and restore against raw file writes and reads
    data         cache build against decode only; the training stream's epochs
    train        the custom loop against model.fit; the stream against tensors in memory
    distributed  2 workers against 1 process
    precision    training images/s under float32, mixed_bfloat16 and mixed_float16
    scale        start-up, ingest, epoch and evaluation as the scans grow
    uncertainty  evaluation time with mc_dropout, tta and an ensemble against none
    common       what several of them share (no benchmark of its own)

Each benchmark module has ``add_arguments(parser)`` for its own options and ``run(args)``,
which returns the result the dispatcher writes to ``benchmarks/<name>.json``. They import
``bench.common`` and ``retina``, never each other nor the dispatcher.
"""
