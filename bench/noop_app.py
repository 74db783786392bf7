"""The baseline for the serving benchmark: a FastAPI app that accepts the /predict upload and does nothing.

    .venv/bin/python -m bench.noop_app --port 8001 [--workers 2]

`POST /predict` takes the same multipart body as the service (one or several parts named `file`)
through FastAPI's standard `UploadFile` parameter, reads each part's bytes, and answers with a
fixed JSON document shaped like the service's answer for one image (about the same size on the
wire). No image is decoded, no network runs, no metrics are kept: what is left is the framework's
cost of receiving this upload and answering it, the floor under any endpoint that serves it. This is
how a FastAPI developer would write the endpoint by default, so it is the honest baseline (the
service parses the body its own way; that is part of what it is measured on).

Kept free of the service's imports so that it measures the framework alone.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, UploadFile

app = FastAPI(title="no-op upload endpoint (benchmark baseline)")

# The service's answer for one 28x28 MNIST "7", with the same keys and number formatting.
FIXED = {
    "model": "mnist",
    "version": "v0001",
    "predictions": [
        {
            "filename": "digit.png",
            "digit": 7,
            "confidence": 0.999868,
            "probabilities": [0.0, 0.0, 9e-06, 0.000121, 0.0, 0.0, 0.0, 0.999868, 0.0, 2e-06],
        }
    ],
}


@app.post("/predict")
async def predict(file: Annotated[list[UploadFile], File()]) -> dict:
    for upload in file:
        await upload.read()
        await upload.close()
    return FIXED


@app.get("/readyz")
async def readyz() -> dict:
    return {"ready": True}


def main() -> None:
    """Run it under uvicorn with the options `python -m service` uses (uvloop, httptools, proxy headers)."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    uvicorn.run(
        "bench.noop_app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
