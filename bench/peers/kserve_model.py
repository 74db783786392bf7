"""KServe: a `kserve.Model` around the project's network, served by `ModelServer` (V2 REST, no gRPC).

    python kserve_model.py --http_port PORT --enable_grpc false --workers 1

The response id is set from the request (or made up): KServe 0.21 answers 500 to a V2 request
without an `id` otherwise.
"""

from __future__ import annotations

import uuid

from common import load_net
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server


class Mnist(Model):
    def __init__(self) -> None:
        super().__init__("mnist")
        self.net = load_net()
        self.ready = True

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        pixels = payload.inputs[0].as_numpy()
        probabilities = self.net.predict_proba(pixels.reshape(len(pixels), 784))
        binary = payload.use_binary_outputs
        outputs = []
        for name, values in (("probabilities", probabilities), ("label", probabilities.argmax(axis=1))):
            output = InferOutput(
                name=name, shape=list(values.shape), datatype="FP32" if name == "probabilities" else "INT64"
            )
            output.set_data_from_numpy(values, binary_data=binary)
            outputs.append(output)
        return InferResponse(
            model_name=self.name,
            infer_outputs=outputs,
            response_id=payload.id or str(uuid.uuid4()),
            use_binary_outputs=binary,
            requested_outputs=payload.request_outputs,
        )


if __name__ == "__main__":
    args, _ = model_server.parser.parse_known_args()
    ModelServer().start([Mnist()])
