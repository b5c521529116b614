"""What each supported dataset is made of: its files, their format, and its class names."""
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    format: str              # "idx" (gzipped idx files) or "cifar" (python pickle batches in a tar.gz)
    files: dict[str, str]    # role -> file name under the mirror's base URL
    classes: tuple[str, ...]


def _idx_files() -> dict[str, str]:
    return {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }


DATASETS = {
    "fashion_mnist": DatasetSpec(
        "idx",
        _idx_files(),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "mnist": DatasetSpec("idx", _idx_files(), tuple(str(d) for d in range(10))),
    "cifar10": DatasetSpec(
        "cifar",
        {"archive": "cifar-10-python.tar.gz"},
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
}
