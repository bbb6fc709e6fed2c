"""neuralengine: a chess engine without search.

A transformer reads the position and one candidate move and predicts that
move's win probability (DeepMind's action-value model); the engine scores all
legal moves in one batched inference and plays the best.

Importing this package is cheap: NumPy, PyTorch and ONNX Runtime load only
when a model is opened.
"""

__version__ = "0.1.0"
