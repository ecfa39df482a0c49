"""A trained run restored and predicting: what training's validation, evaluate, predict,
export and explain share.

    restore   ``load_run_model``: the run's model rebuilt in float32 from its config.yaml,
              its weights restored from a checkpoint (verified)
    outputs   predict steps (softmax, optionally averaged over the four flips), batched
              prediction of cached scans, probability columns

It needs a run's ``config.yaml``, a checkpoint and the preprocessing cache, nothing else: it
imports ``checkpoint``, ``models``, ``data`` and ``metrics`` below it, never a job package
or the training code.
"""
