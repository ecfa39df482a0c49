"""A Vision Transformer's weights from RETFound's files: ``model.weights=<path>``.

The state dict (key -> array, RETFound's / timm's key names) comes from a PyTorch ``.pth``
(its ``model`` entry, read by ``retina.models.torch_pickle``: no PyTorch, nothing run), a
``.safetensors`` or an ``.npz``. MAE's decoder, its mask token and the old classifier head
are dropped; the encoder's final ``norm`` too, as RETFound drops it for global pooling.
Every other key must land in a variable of the model, and every variable of the backbone
must receive one, shapes checked, or the load fails naming the keys. A position embedding
for another grid is resized as RETFound's ``interpolate_pos_embed`` does (PyTorch's
bicubic, a = -0.75, corners not aligned).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from retina.errors import ConfigError
from retina.models.torch_pickle import load_torch_file

DROPPED_PREFIXES = ("decoder_", "mask_token", "head.", "norm.")
STATE_ENTRIES = ("model", "state_dict", "model_state")  # where checkpoints keep the weights


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The key -> float32 array state dict of a ``.pth``/``.pt``, ``.safetensors`` or ``.npz``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt"):
        state = load_torch_file(path)
        if isinstance(state, dict):
            state = next((state[key] for key in STATE_ENTRIES if key in state), state)
    elif suffix == ".safetensors":
        from safetensors.numpy import load_file

        state = load_file(path)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            state = dict(archive)
    else:
        raise ConfigError(
            f"model.weights={path}: a Vision Transformer reads .pth, .safetensors or .npz "
            f"weights (RETFound's key names), not {suffix or 'a file without a suffix'}."
        )
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise ConfigError(f"model.weights={path}: not a state dict of arrays (key -> tensor).")
    return {key: np.asarray(value, np.float32) for key, value in state.items()}


def load_foreign_weights(model: keras.Model, path: str | Path) -> None:
    """Assigns the file's weights to ``model`` (built by ``retina.models.vit``): every key
    lands in a variable, and every variable but the new head's gets one, or nothing is
    loaded and the error names the keys."""
    state = read_state_dict(path)
    targets = _targets(model, _grid(model))
    kept = {key: value for key, value in state.items() if not key.startswith(DROPPED_PREFIXES)}
    unknown = sorted(set(kept) - set(targets))
    missing = sorted(key for key, (required, _) in targets.items() if required and key not in kept)
    if unknown or missing:
        problems = [f"keys the model has no place for: {_listed(unknown)}"] if unknown else []
        problems += [f"the model's keys the file lacks: {_listed(missing)}"] if missing else []
        raise ConfigError(
            f"model.weights={path} does not fit model.name={model.name}: {'; '.join(problems)}. "
            "Give RETFound's weights of this shape (model.width, depth, heads, patch_size)."
        )
    for key, value in kept.items():
        for variable, convert in targets[key][1]:
            try:
                converted = convert(value)
            except ValueError:  # a split or reshape that this array cannot make
                converted = value
            if tuple(converted.shape) != tuple(variable.shape):
                raise ConfigError(
                    f"model.weights={path}: {key} has shape {value.shape}, which does not fit "
                    f"the model's {variable.path} {tuple(variable.shape)} ({_shape_hint(key)})."
                )
            variable.assign(converted)


def _listed(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _shape_hint(key: str) -> str:
    if key == "pos_embed":
        return "a position embedding is resized only as a square grid"
    return "another model.width, depth, heads or patch_size"


def _grid(model: keras.Model) -> int:
    return model.get_layer("patch_grid").output.shape[1]


def _targets(model: keras.Model, grid: int) -> dict:
    """RETFound key -> (required, [(variable, conversion of the file's array), ...])."""
    patch, tokens = model.get_layer("patch_embed"), model.get_layer("tokens")
    norm = model.get_layer("head_norm")
    targets = {
        "patch_embed.proj.weight": (True, [(patch.kernel, lambda w: w.transpose(2, 3, 1, 0))]),
        "patch_embed.proj.bias": (True, [(patch.bias, _same)]),
        "cls_token": (True, [(tokens.cls_token, _same)]),
        "pos_embed": (True, [(tokens.pos_embed, lambda p: resize_position_embedding(p, grid))]),
        "fc_norm.weight": (False, [(norm.gamma, _same)]),  # a fine-tuned RETFound has it
        "fc_norm.bias": (False, [(norm.beta, _same)]),
    }
    blocks = [layer for layer in model.layers if layer.name.startswith("block_")]
    for block in blocks:
        targets.update(_block_targets(block, f"blocks.{block.name.removeprefix('block_')}."))
    return targets


def _block_targets(block, prefix: str) -> dict:
    """timm's fused qkv projection splits into Keras' query, key and value kernels of
    shape (width, heads, width / heads); its output projection likewise."""
    attn, width, heads = block.attn, block.width, block.heads
    per_head = width // heads
    parts = (attn.query_dense, attn.key_dense, attn.value_dense)

    def rows(part: int, shape: tuple, transpose: bool):
        def convert(value):
            chosen = value[part * width : (part + 1) * width]
            return (chosen.T if transpose else chosen).reshape(shape)

        return convert

    return {
        f"{prefix}attn.qkv.weight": (
            True,
            [(d.kernel, rows(i, (width, heads, per_head), True)) for i, d in enumerate(parts)],
        ),
        f"{prefix}attn.qkv.bias": (
            True,
            [(d.bias, rows(i, (heads, per_head), False)) for i, d in enumerate(parts)],
        ),
        f"{prefix}attn.proj.weight": (
            True,
            [(attn.output_dense.kernel, lambda w: w.T.reshape(heads, per_head, width))],
        ),
        f"{prefix}attn.proj.bias": (True, [(attn.output_dense.bias, _same)]),
        f"{prefix}norm1.weight": (True, [(block.norm1.gamma, _same)]),
        f"{prefix}norm1.bias": (True, [(block.norm1.beta, _same)]),
        f"{prefix}norm2.weight": (True, [(block.norm2.gamma, _same)]),
        f"{prefix}norm2.bias": (True, [(block.norm2.beta, _same)]),
        f"{prefix}mlp.fc1.weight": (True, [(block.fc1.kernel, _transposed)]),
        f"{prefix}mlp.fc1.bias": (True, [(block.fc1.bias, _same)]),
        f"{prefix}mlp.fc2.weight": (True, [(block.fc2.kernel, _transposed)]),
        f"{prefix}mlp.fc2.bias": (True, [(block.fc2.bias, _same)]),
    }


def _same(value: np.ndarray) -> np.ndarray:
    return value


def _transposed(value: np.ndarray) -> np.ndarray:
    return value.T


def resize_position_embedding(embedding: np.ndarray, grid: int) -> np.ndarray:
    """(1, 1 + n*n, width) -> (1, 1 + grid*grid, width): the class token's row kept, the
    n x n grid resized by ``torch.nn.functional.interpolate(mode="bicubic",
    align_corners=False)``'s arithmetic."""
    tokens = embedding.shape[1] - 1
    size = int(round(tokens**0.5))
    if size * size != tokens or size == grid:
        return embedding
    weights = _bicubic_matrix(size, grid)  # (grid, size)
    patches = embedding[0, 1:].reshape(size, size, -1)
    resized = np.einsum("ij,jkc,lk->ilc", weights, patches, weights)
    return np.concatenate([embedding[:, :1], resized.reshape(1, grid * grid, -1)], axis=1)


def _bicubic_matrix(size: int, out: int, a: float = -0.75) -> np.ndarray:
    """The (out, size) matrix of PyTorch's 1-D bicubic resampling (edge pixels repeated)."""
    matrix = np.zeros((out, size))
    for i in range(out):
        centre = (i + 0.5) * size / out - 0.5
        start = int(np.floor(centre))
        t = centre - start
        for offset, weight in zip(range(-1, 3), _cubic_weights(t, a), strict=True):
            matrix[i, min(max(start + offset, 0), size - 1)] += weight
    return matrix


def _cubic_weights(t: float, a: float) -> list[float]:
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]
