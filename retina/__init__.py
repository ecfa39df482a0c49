"""retina: train and evaluate retinal fundus classifiers with TensorFlow."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) buries the real log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
