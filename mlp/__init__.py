"""A multilayer perceptron written by hand in NumPy, and its weight file format."""

from mlp.explain import gradient_times_input
from mlp.layers import Dense, Dropout, ReLU, SoftmaxCrossEntropy, energy, softmax
from mlp.network import DTYPE, INPUT_SCALE, MLP, as_input, param_names, validate_sizes
from mlp.weights import FORMAT_VERSION, WeightFileError, load_weights, read_meta, save_weights

__all__ = [
    "DTYPE",
    "FORMAT_VERSION",
    "INPUT_SCALE",
    "MLP",
    "Dense",
    "Dropout",
    "ReLU",
    "SoftmaxCrossEntropy",
    "WeightFileError",
    "as_input",
    "energy",
    "gradient_times_input",
    "load_weights",
    "param_names",
    "read_meta",
    "save_weights",
    "softmax",
    "validate_sizes",
]
