"""batch_sleep: OUTPUT0 = 2 * INPUT0 after a batch-size dependent sleep."""

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.base_s = float(params.get("base_ms", {}).get("string_value", "2")) / 1000
        self.per_item_s = float(params.get("per_item_ms", {}).get("string_value", "0.5")) / 1000
        self.factor = float(os.environ.get("TRITONFLEET_SLOW_FACTOR", "1"))

    def execute(self, requests):
        batch = sum(pb_utils.get_input_tensor_by_name(r, "INPUT0").shape()[0] for r in requests)
        time.sleep((self.base_s + self.per_item_s * batch) * self.factor)
        responses = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (x * 2).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
