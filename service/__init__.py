"""The HTTP service: FastAPI app that serves the trainer's versioned NumPy models."""
