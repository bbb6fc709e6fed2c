"""The one part of the build that pyproject.toml cannot say.

The shipped model stays in ``weights/`` at the top of the repository (its
single copy) and is installed as package data, ``neuralengine/weights_data/``,
where :func:`neuralengine.paths.default_weights` finds it with
:mod:`importlib.resources`, whatever the install scheme (``--user``,
``--prefix``, Debian's ``/usr/local``). Static ``[tool.setuptools]`` settings
would need every subpackage listed by hand to add this mapping; here the code
packages are still discovered. An editable install reads ``weights/`` directly.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["neuralengine", "neuralengine.*"]) + ["neuralengine.weights_data"],
    package_dir={"neuralengine.weights_data": "weights"},
    package_data={
        "neuralengine": ["py.typed", "benchmarks/*.epd", "benchmarks/*.fen", "benchmarks/*.pgn"],
        "neuralengine.weights_data": ["*.safetensors", "*.onnx", "README.md"],
    },
)
