"""text_stats: LENGTH = len(TEXT) in bytes, UPPER = TEXT upper-cased."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for r in requests:
            text = pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy()
            lengths = np.array([[len(t[0])] for t in text], dtype=np.int64)
            upper = np.array([[t[0].upper()] for t in text], dtype=np.object_)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("LENGTH", lengths),
                        pb_utils.Tensor("UPPER", upper),
                    ]
                )
            )
        return responses
