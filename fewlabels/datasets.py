"""What each supported dataset is made of: its files and their digests, their format, its class names, the
mirrors that serve it, and the most a genuine copy holds. The download (fewlabels.download) keeps a file only
if it matches its digest, and it and the parsers (fewlabels.formats) refuse anything larger before reading it,
so a crafted or endless file costs bounded memory and disk.

A digest is code, not a setting: a dataset of other bytes is a change here, which reruns the download stage
(this file is one of its deps). params.yaml's data.sources can only change where the bytes come from.
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
class DataFile:
    """One file of a dataset and what it must hash to before it is kept: `digest` is 'md5:<hex>' of the file as
    served, or 'gunzip-sha256:<hex>' of its decompressed bytes (so a recompressed copy, such as Debian's, verifies)."""
    name: str  # under each mirror's base URL
    digest: str


@dataclass(frozen=True)
class DatasetSpec:
    format: str                         # "idx" (gzipped idx files) or "cifar" (python pickle batches in a tar.gz)
    files: dict[str, DataFile]          # role -> file
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]   # (channels, height, width) of every image
    max_images: dict[str, int]          # split -> images in the genuine dataset: an upper bound, as fakes hold fewer
    max_file_bytes: dict[str, int]      # file name -> most bytes a genuine copy takes, from any mirror
    mirrors: tuple[str, ...]            # base URLs tried in order: the defaults of params.yaml's data.sources
    max_member_bytes: int = 0           # the largest file inside an archive (cifar: one batch pickle); 0: no archive
    mirror_safe: bool = True            # a mirrored image shows the same class (clothes, objects; not digits)


IDX_FILES = {  # role -> file name: the same for MNIST and Fashion-MNIST
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _idx(classes: tuple[str, ...], digests: dict[str, str], mirrors: tuple[str, ...], mirror_safe: bool) -> DatasetSpec:
    """MNIST and Fashion-MNIST: 60,000 + 10,000 grey 28x28 images in four gzipped idx files (`digests`: role ->
    digest)."""
    files = {role: DataFile(name, digests[role]) for role, name in IDX_FILES.items()}
    image_shape, max_images = (1, 28, 28), {"train": 60_000, "test": 10_000}
    max_file_bytes = {}
    for split, n in max_images.items():
        # gzip_bound: a mirror may recompress (Debian's copies are smaller than upstream's); any level passes
        images, labels = IDX_FILES[f"{split}_images"], IDX_FILES[f"{split}_labels"]
        max_file_bytes[images] = gzip_bound(IDX_HEADER_BYTES["images"] + n * math.prod(image_shape))
        max_file_bytes[labels] = gzip_bound(IDX_HEADER_BYTES["labels"] + n)  # a byte per label
    return DatasetSpec("idx", files, classes, image_shape, max_images, max_file_bytes, mirrors, mirror_safe=mirror_safe)


def _cifar10(digest: str, mirrors: tuple[str, ...]) -> DatasetSpec:
    """CIFAR-10: 5 x 10,000 + 10,000 colour 32x32 images as Python 2 pickles in one tar.gz."""
    name, image_shape = "cifar-10-python.tar.gz", (3, 32, 32)
    max_images = {"train": 5 * CIFAR_BATCH_IMAGES, "test": CIFAR_BATCH_IMAGES}
    image_bytes = math.prod(image_shape) + CIFAR_PICKLE_BYTES_PER_IMAGE
    archive = gzip_bound(sum(max_images.values()) * image_bytes + CIFAR_ARCHIVE_EXTRA_BYTES)  # the real one: 170 MB
    return DatasetSpec(
        "cifar",
        {"archive": DataFile(name, digest)},
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        image_shape,
        max_images,
        {name: archive},
        mirrors,
        max_member_bytes=CIFAR_BATCH_IMAGES * image_bytes,
    )


DATASETS = {
    "fashion_mnist": _idx(
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        {  # gunzip-sha256: Debian's copy is recompressed, so upstream's md5s would refuse it
            "train_images": "gunzip-sha256:c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_labels": "gunzip-sha256:bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test_images": "gunzip-sha256:5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_labels": "gunzip-sha256:0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        (f"file://{DEBIAN_FASHION_MNIST}", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"),
        mirror_safe=True,
    ),
    "mnist": _idx(
        tuple(str(d) for d in range(10)),
        {
            "train_images": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "md5:d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "md5:9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "md5:ec29112dd5afa0611ce80d1b7f02629c",
        },
        ("https://ossci-datasets.s3.amazonaws.com/mnist", "http://yann.lecun.com/exdb/mnist"),
        mirror_safe=False,  # a mirrored 2 is no digit, a mirrored 6 is nearly a 9
    ),
    "cifar10": _cifar10("md5:c58f30108f718f92721af3b95e74349a", ("https://www.cs.toronto.edu/~kriz",)),
}
