"""Layer-wise learning-rate decay, ``optimizer.layer_decay`` (BEiT; RETFound fine-tunes with
0.65): in a Vision Transformer of n blocks, block i learns at decay^(n - i) of the rate,
the patch embedding, class token and position embedding at decay^(n + 1), the head at the
full rate (RETFound's ``util/lr_decay.param_groups_lrd``). Decoupled weight decay follows
each variable's own rate, as PyTorch's AdamW applies it per parameter group, and only to
kernels: biases, norms, the class token and position embedding keep theirs, as in RETFound.
"""

from __future__ import annotations

import keras

from retina.errors import ConfigError
from retina.models.vit import TransformerBlock

EMBEDDING_LAYERS = ("patch_embed", "tokens")  # RETFound's layer 0


def layer_scales(model: keras.Model, decay: float) -> dict[str, float]:
    """Variable path -> learning-rate scale; empty when ``decay`` is 1 (off)."""
    if decay == 1:
        return {}
    if not 0 < decay < 1:
        raise ConfigError(f"optimizer.layer_decay={decay}; use a value in (0, 1], 1 for off.")
    blocks = [layer for layer in model.layers if isinstance(layer, TransformerBlock)]
    if not blocks:
        raise ConfigError(
            f"optimizer.layer_decay={decay} scales the rate of a Vision Transformer's blocks "
            f"(model=vit, vit_base_patch16, vit_large_patch16); model.name={model.name} has "
            "none. Set optimizer.layer_decay=1, or give the head its own rate with "
            "optimizer.head."
        )
    top = len(blocks) + 1  # the head's layer id
    scales = {}
    for layer in model.layers:
        if layer.name in EMBEDDING_LAYERS:
            layer_id = 0
        elif isinstance(layer, TransformerBlock):
            layer_id = blocks.index(layer) + 1
        else:
            layer_id = top
        scales.update({v.path: decay ** (top - layer_id) for v in layer.trainable_variables})
    return scales


class LayerScaled:
    """Mixed into a Keras optimizer: each variable's update uses ``rate x its scale``
    (``set_scales`` before ``build``, from ``layer_scales`` with ``layer_decay``), and the
    decoupled weight decay ``decoupled_decay`` (AdamW's) the same scaled rate, on kernels
    only."""

    layer_decay: float = 1.0
    decoupled_decay: float = 0.0

    def set_scales(self, variables: list, scales: dict[str, float]) -> None:
        self.variable_scales = [scales.get(v.path, 1.0) for v in variables]
        self.decays_variable = [v.path.endswith("kernel") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        rate = learning_rate * self.variable_scales[index]
        if self.decoupled_decay and self.decays_variable[index]:
            shrink = keras.ops.cast(rate * self.decoupled_decay, variable.dtype)
            variable.assign_sub(variable * shrink)
        return super().update_step(gradient, variable, rate)


def layer_scaled(optimizer_class: type) -> type:
    """``optimizer_class`` with ``LayerScaled`` mixed in."""
    return type(f"LayerScaled{optimizer_class.__name__}", (LayerScaled, optimizer_class), {})
