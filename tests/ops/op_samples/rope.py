"""Op-matrix samples: rotary position embeddings."""
import numpy as np

import graphc as G

from . import In, Sample

_inv_freq = (1.0 / 10000 ** (np.arange(0, 8, 2) / 8)).astype(np.float32)

SAMPLES = [
    Sample("rope", lambda a, p: G.rope(a, p, _inv_freq, scale=1.0),
           [In((2, "S", 8)), In(("S",), "int64", "index:64")]),
]
