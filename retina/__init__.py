"""retina: train and evaluate retinal fundus classifiers with TensorFlow."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) buries the real log; a
# user who sets the level themselves gets what they asked for (see retina.console). The marker
# tells child processes (sweep jobs, tests' subprocesses) that the level is ours, not theirs.
_DEFAULTED_MARKER = "RETINA_DEFAULTED_TF_LOG_LEVEL"
USER_SET_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ and _DEFAULTED_MARKER not in os.environ
if not USER_SET_TF_LOG_LEVEL:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    os.environ[_DEFAULTED_MARKER] = "1"

__version__ = "0.1.0"
