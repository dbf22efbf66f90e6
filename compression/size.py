"""What a trained model weighs on a device: parameters, sparsity, and bytes as float32, as dense
int8 and as sparse int8.

Counted over the model a device runs: every parameter except the auxiliary CTC head (it only
trains the encoder). Weight matrices (the leaves `compression.weights.Selection` picks by
default) are what quantization and pruning act on; every other parameter (biases, normalization
scales, embeddings, depthwise filters) stays float32 in all three counts.

- `model_bytes_float32`: 4 bytes a parameter.
- `model_bytes_int8`: 1 byte a matrix weight plus one float32 scale per output channel.
- `model_bytes_int8_sparse`: 1 byte a non-zero matrix weight, a presence bitmap (1 bit a
  weight) and the scales: the size of the bitmap format `hardware/` packs (the packed format
  itself, its blocks and its exact round trip belong to the hardware layer; this counts it).
"""

from __future__ import annotations

import math

import jax
import numpy as np

from compression.weights import EXCLUDE, INCLUDE, Selection, leaf_name


def model_size(params, select: Selection | None = None) -> dict:
  """`params` (a parameter tree, host or device) -> the sizes above, `num_params`,
  `num_weights` (in matrices), `sparsity` (share of zeros in those matrices) and
  `sparsity_by_layer` ({matrix name: share of zeros})."""
  select = select or Selection(INCLUDE, EXCLUDE)
  device = [(leaf_name(p), np.asarray(x)) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
            if not (select.exclude and select.exclude.search(leaf_name(p)))]
  matrices = {n: x for n, x in device if select(n, x)}
  others = sum(x.size for n, x in device if n not in matrices)
  weights = sum(x.size for x in matrices.values())
  nonzero = sum(int(np.count_nonzero(x)) for x in matrices.values())
  scales = sum(x.shape[-1] for x in matrices.values())
  bitmap = sum(math.ceil(x.size / 8) for x in matrices.values())
  return {"num_params": int(others + weights), "num_weights": int(weights),
          "sparsity": float(1 - nonzero / max(weights, 1)),
          "sparsity_by_layer": {n: float(1 - np.count_nonzero(x) / x.size)
                                for n, x in matrices.items()},
          "model_bytes_float32": int(4 * (others + weights)),
          "model_bytes_int8": int(4 * others + weights + 4 * scales),
          "model_bytes_int8_sparse": int(4 * others + nonzero + bitmap + 4 * scales)}
