"""The notebooks' recipe, written as the notebooks write it: the contender the project is measured against.

torchvision's FashionMNIST (PIL image -> ToTensor per sample), DataLoader(batch_size=64, shuffle=True),
the registry's `cnn` (the notebooks' model), Adam at 1e-3, and a plain loop that moves each batch to the
device and reads the loss back every step (`running_loss += loss.item()`).
"""
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision.transforms import ToTensor

from bench.common import fashion_model, torchvision_root

BATCH_SIZE = 64
LR = 1e-3


def fashion_mnist_set(train: bool) -> datasets.FashionMNIST:
    return datasets.FashionMNIST(torchvision_root(), train=train, download=False, transform=ToTensor())


def train_loader(batch_size: int = BATCH_SIZE, indices=None) -> DataLoader:
    """The notebooks' loader over their training set, or over the images at `indices` of it."""
    images = fashion_mnist_set(True)
    return DataLoader(images if indices is None else Subset(images, indices), batch_size=batch_size, shuffle=True)


def model_and_optimizer(device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    model = fashion_model("cnn").to(device)
    return model, torch.optim.Adam(model.parameters(), lr=LR)


def train_step(model, opt, images, labels, device) -> float:
    images, labels = images.to(device), labels.to(device)
    opt.zero_grad()
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()
    return loss.item()  # the notebooks' running loss: one host synchronisation per step


def train_epoch(model, opt, loader, device) -> tuple[float, float]:
    """One epoch; returns (seconds, mean training loss). The loss is read every step, so the device is idle at the end."""
    model.train()
    start = time.perf_counter()
    running_loss = 0.0
    for images, labels in loader:
        running_loss += train_step(model, opt, images, labels, device)
    return time.perf_counter() - start, running_loss / len(loader)


@torch.no_grad()
def accuracy(model, device, dataset) -> float:
    """Accuracy on a dataset of (image, label), as the notebooks score their test set."""
    model.eval()
    correct = total = 0
    for images, labels in DataLoader(dataset, batch_size=1000):
        correct += (model(images.to(device)).argmax(1).cpu() == labels).sum().item()
        total += len(labels)
    return correct / total
