"""What each supported dataset is made of: its files, their format, its class names, and the most a genuine
copy holds. The download (fewlabels.download) and the parsers (fewlabels.formats) refuse anything larger
before reading it, so a crafted or endless file costs bounded memory and disk.
"""
import math
from dataclasses import dataclass

IDX_HEADER_BYTES = {"images": 4 + 4 * 3, "labels": 4 + 4 * 1}  # magic number, then one uint32 per dimension
CIFAR_BATCH_IMAGES = 10_000  # images per batch file (data_batch_1..5, test_batch)
# A CIFAR batch pickle's bytes per image besides its pixels: its label, file name and pickle opcodes
# (about 32 in the real batches; 256 leaves room for a re-pickled copy).
CIFAR_PICKLE_BYTES_PER_IMAGE = 256
CIFAR_ARCHIVE_EXTRA_BYTES = 1 << 20  # batches.meta, readme.html and the tar headers: a few KiB in the real archive
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist puts the gz files here


def gzip_bound(n: int) -> int:
    """The most bytes a gzip of `n` bytes takes, whoever compressed it: zlib's deflateBound (n + n/4096 +
    n/16384 + 13, stored blocks at worst) with room to spare, plus 4 KiB for a header naming the file."""
    return n + n // 1000 + 4096


@dataclass(frozen=True)
class DatasetSpec:
    format: str                         # "idx" (gzipped idx files) or "cifar" (python pickle batches in a tar.gz)
    files: dict[str, str]               # role -> file name under the mirror's base URL
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]   # (channels, height, width) of every image
    max_images: dict[str, int]          # split -> images in the genuine dataset: an upper bound, as fakes hold fewer
    max_file_bytes: dict[str, int]      # file name -> most bytes a genuine copy takes, from any mirror
    max_member_bytes: int = 0           # the largest file inside an archive (cifar: one batch pickle); 0: no archive


def _idx(classes: tuple[str, ...]) -> DatasetSpec:
    """MNIST and Fashion-MNIST: 60,000 + 10,000 grey 28x28 images in four gzipped idx files."""
    files = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    image_shape, max_images = (1, 28, 28), {"train": 60_000, "test": 10_000}
    max_file_bytes = {}
    for split, n in max_images.items():
        # gzip_bound: a mirror may recompress (Debian's copies are smaller than upstream's); any level passes
        max_file_bytes[files[f"{split}_images"]] = gzip_bound(IDX_HEADER_BYTES["images"] + n * math.prod(image_shape))
        max_file_bytes[files[f"{split}_labels"]] = gzip_bound(IDX_HEADER_BYTES["labels"] + n)  # a byte per label
    return DatasetSpec("idx", files, classes, image_shape, max_images, max_file_bytes)


def _cifar10() -> DatasetSpec:
    """CIFAR-10: 5 x 10,000 + 10,000 colour 32x32 images as Python 2 pickles in one tar.gz."""
    image_shape = (3, 32, 32)
    max_images = {"train": 5 * CIFAR_BATCH_IMAGES, "test": CIFAR_BATCH_IMAGES}
    image_bytes = math.prod(image_shape) + CIFAR_PICKLE_BYTES_PER_IMAGE
    archive = gzip_bound(sum(max_images.values()) * image_bytes + CIFAR_ARCHIVE_EXTRA_BYTES)  # the real one: 170 MB
    return DatasetSpec(
        "cifar",
        {"archive": "cifar-10-python.tar.gz"},
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        image_shape,
        max_images,
        {"cifar-10-python.tar.gz": archive},
        max_member_bytes=CIFAR_BATCH_IMAGES * image_bytes,
    )


DATASETS = {
    "fashion_mnist": _idx(("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "mnist": _idx(tuple(str(d) for d in range(10))),
    "cifar10": _cifar10(),
}
