"""Training: ``train(cfg, run_dir)`` (``loop``) and what it rests on: the session before the
first step, the compiled step, optimizers, schedules, losses, weight averages, the dtype
policy (chosen by measurement on bfloat16 CPUs: ``precision_probe``, ``precision_cache``),
validation, tf.distribute placement, preemption and TensorBoard.

It may import ``evaluation`` (the test split after the last epoch) and every layer below;
no module outside it and the entry points imports it.
"""
