"""MLServer: a custom runtime (`MLModel`) around the project's network; NumPy codec in and out."""

from __future__ import annotations

from common import load_net
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class Mnist(MLModel):
    async def load(self) -> bool:
        self.net = load_net()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        pixels = NumpyCodec.decode_input(payload.inputs[0])
        probabilities = self.net.predict_proba(pixels.reshape(len(pixels), 784))
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output("probabilities", probabilities),
                NumpyCodec.encode_output("label", probabilities.argmax(axis=1)),
            ],
        )
