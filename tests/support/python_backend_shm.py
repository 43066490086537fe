"""How much shared memory Triton's Python-backend models may hold at once (docs/runbook.md)."""

from __future__ import annotations

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from client_worker.config import Settings
from export.repository import all_configs
from img2mesh.contract import TEXTURE, TEXTURE_SIZE, Shapes

# Upper bounds of the variable-sized tensors that pass through /dev/shm (docs/runbook.md).
MAX_MESH_ROWS = 2_000_000  # faces of the largest mesh; vertices are fewer
MAX_JSON_BYTES = 64 << 10  # MESH_INFO


def _tensor_bytes(tensor: mc.ModelInput | mc.ModelOutput, *, is_input: bool, variable_rows: int) -> int:
    if tensor.data_type == mc.TYPE_STRING:
        return Settings.default("download_max_bytes") if is_input else MAX_JSON_BYTES
    item = np.dtype(mc.DataType.Name(tensor.data_type).removeprefix("TYPE_").lower().replace("fp", "float")).itemsize
    if tensor.name == TEXTURE:  # [side, side, 3], the largest side a request may ask for
        variable_rows = max(TEXTURE_SIZE.choices)
    return item * int(np.prod([variable_rows if dim == -1 else dim for dim in tensor.dims]))


def _request_bytes(config: mc.ModelConfig, variable_rows: int) -> int:
    return sum(_tensor_bytes(t, is_input=True, variable_rows=variable_rows) for t in config.input) + sum(
        _tensor_bytes(t, is_input=False, variable_rows=variable_rows) for t in config.output
    )


def python_backend_shm_bound(flavour: str) -> int:
    """Σ over Python-backend instances of max_batch_size × the largest request (runbook formula).

    The mesher's requests also carry one decoder chunk through BLS.
    """
    configs = all_configs(flavour, Shapes())
    total = 0
    for config in configs.values():
        if config.backend != "python":
            continue
        request = _request_bytes(config, MAX_MESH_ROWS)
        if "decoder_model" in config.parameters:
            decoder = configs[config.parameters["decoder_model"].string_value]
            request += _request_bytes(decoder, int(config.parameters["chunk_size"].string_value))
        instances = sum(group.count for group in config.instance_group)
        total += instances * config.max_batch_size * request
    return total
