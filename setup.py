"""emodna_jax: cross-corpus speech emotion recognition in JAX."""

import setuptools

INSTALL_REQUIRES = [
    # Model, training, checkpoints.
    "jax>=0.10.0",
    "flax>=0.12.0",
    "optax>=0.2.6",
    "orbax-checkpoint>=0.12.0",
    "ml-collections>=1.1.0",
    "absl-py>=2.1.0",
    # Audio and features.
    "librosa>=0.11.0",
    "soundfile>=0.13.0",
    "numpy>=2.0",
    # Shards and loading, without TensorFlow.
    "tensorflow-datasets>=4.9.9",
    "array-record>=0.8.1",
    "grain>=0.2.12",
    "importlib_resources>=6.0",  # TFDS needs it for builders defined in a package
    "tqdm>=4.66",
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    # Evaluation report.
    "matplotlib>=3.8",
    "scikit-learn>=1.3",  # t-SNE of the embedding figure, k-means
    "threadpoolctl>=3.1",  # one BLAS thread per feature-extraction worker
]

ONNX = ["jax2onnx==0.13.0", "onnxruntime>=1.20"]

setuptools.setup(
    name="emodna_jax",
    version="0.1.0",
    description="Cross-corpus speech emotion recognition (Emo-DNA, MSAC-SERNet) "
                "in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # configs and benchmarks too: `python -m benchmarks.cross_corpus` and
    # `from configs import default` work from any directory.
    packages=setuptools.find_packages(
        include=["emodna_jax*", "data_prep*", "configs*", "benchmarks*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # openSMILE's eGeMAPS: the classical anchor of benchmarks/cross_corpus.py
        # (tested too, so the test extra installs it).
        # torch: the eager PyTorch twin of benchmarks/train_step.py.
        "bench": ["opensmile>=2.5", "torch==2.13.0"],
        # model.onnx of --mode=export, and the Predictor's ONNX backend.
        # jax2onnx 0.13.1 and later pin orbax-checkpoint below 0.11.37.
        "onnx": ONNX,
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "opensmile>=2.5",
                 "filelock>=3.0"]   # the tests' shared compilation cache
                + ONNX,
    },
)
