"""Label propagation on the model's own embeddings (Iscen, Tolias, Avrithis & Chum, "Label Propagation for Deep
Semi-supervised Learning", CVPR 2019; reference code ahmetius/LP-DeepSSL, lp/db_semisuper.py: update_plabels).

Before every epoch that trains on unlabeled batches, the teacher embeds every training image (the input of its last
linear layer, L2-normalised; with ssl.lp_mirror, the mean of the image's and its mirror image's). A
k-nearest-neighbour graph joins them (affinity: cosine similarity cubed, ssl.lp_knn neighbours, symmetrised and
normalised D^-1/2 W D^-1/2), and the labeled images' classes diffuse over it: (I - ssl.lp_alpha W) Z = Y, solved
per class by conjugate gradient (Y: 1 / class size at each labeled image of the class). An unlabeled image's
pseudo-label is its largest Z; its weight is 1 - entropy(Z row, L1-normalised) / log C, scaled so the most certain
image weighs 1; each class weighs (images / classes) / images it labels, against class imbalance. An unlabeled
batch then trains on the weak view (with ssl.lp_strong, the strong one: the student must reach the labels through
more noise than the teacher saw, as in Noisy Student) with cross-entropy to those labels, times both weights. Only
the labeled images' labels are used (Run.labels holds -1 at every unlabeled position).

Deviations: the graph is built exactly (a chunked matrix product, no faiss); the reference trains its second
stage on mixed batches, here unlabeled batches stay pure and join the next labeled step like every method's.
"""
import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
import torch.nn.functional as F

from fewlabels.inference import predict
from fewlabels.methods import base

CG_ITERATIONS = 20  # the reference's max_iter
CHUNK = 1024        # rows of the similarity matrix at a time: CHUNK x images floats (220 MB for 54,000 images)
# images per forward pass of the embedding: bn_cnn embeds 54,000 images 2x faster in passes of 256 than of
# inference.EVAL_BATCH's 1,024 on a 2-core CPU, whose caches the larger batch's activations overflow
EMBED_BATCH = 256


class Method(base.Method):
    STATE = ("targets", "weights", "class_weights")

    def __init__(self, ssl, run: base.Run):
        super().__init__(ssl, run)
        self.labels = run.labels.cpu()  # -1 at every unlabeled position; propagation runs on the CPU
        self.amp = run.bf16  # the embedding's passes autocast like the run's others
        self.targets = torch.zeros(run.n_images, dtype=torch.int64, device=run.device)
        self.weights = torch.zeros(run.n_images, device=run.device)  # 0 until the first propagation
        self.class_weights = torch.ones(run.classes, device=run.device)

    def start_epoch(self, teacher, prep, images: torch.Tensor) -> None:
        scores = propagate(embed(teacher, prep, images, self.ssl.lp_mirror, self.amp), self.labels,
                           len(self.class_weights), self.ssl.lp_knn, self.ssl.lp_alpha)
        targets, weights, class_weights = pseudo_labels(scores, self.labels)
        self.targets.copy_(targets)
        self.weights.copy_(weights)
        self.class_weights.copy_(class_weights)

    def pseudo_labels(self):
        return self.targets, self.weights

    def loss(self, student, x, views, teacher, index):
        targets = self.targets[index]
        view = views.strong if self.ssl.lp_strong else views.weak
        ce = F.cross_entropy(student(view(x)).float(), targets, reduction="none")
        return (ce * self.weights[index] * self.class_weights[targets]).mean()


def last_linear(model) -> torch.nn.Linear:
    """`model`'s classifier: its last linear layer, whose inputs are the penultimate features."""
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]


def embed(model, prep, images: torch.Tensor, mirror: bool = False, amp: bool = False) -> torch.Tensor:
    """L2-normalised inputs of `model`'s last linear layer (its penultimate features) for every image [N, D], in
    float32 on the CPU (eval mode, no gradient; amp: the passes under bf16 autocast); with `mirror`, of the mean of
    each image's and its mirror image's."""
    features = []
    hook = last_linear(model).register_forward_pre_hook(lambda module, args: features.append(args[0].float().cpu()))
    try:
        for view in [prep, lambda x: prep(x).flip(3)] if mirror else [prep]:
            predict(model, view, images, images.device, amp, batch=EMBED_BATCH)
    finally:
        hook.remove()
    features = torch.cat(features)
    if mirror:  # the first half: the images; the second: their mirror images, in the same order
        features = (features[:len(images)] + features[len(images):]) / 2
    return F.normalize(features, dim=1)


def knn_graph(features: torch.Tensor, k: int) -> scipy.sparse.csr_matrix:
    """The symmetric affinity matrix: each image joined to its k most similar others, weight (cosine)^3 >= 0."""
    n = len(features)
    k = min(k, n - 1)
    rows, cols, values = [], [], []
    for start in range(0, n, CHUNK):
        sims = features[start:start + CHUNK] @ features.T
        sims[torch.arange(len(sims)), torch.arange(start, start + len(sims))] = -2  # never its own neighbour
        top, index = sims.topk(k, dim=1)
        rows.append(np.repeat(np.arange(start, start + len(sims)), k))
        cols.append(index.flatten().numpy())
        values.append(top.clamp_min(0).pow(3).flatten().numpy())
    w = scipy.sparse.csr_matrix((np.concatenate(values).astype(np.float64), (np.concatenate(rows), np.concatenate(cols))),
                                shape=(n, n))
    return w + w.T


def propagate(features: torch.Tensor, labels: torch.Tensor, classes: int, k: int, alpha: float) -> torch.Tensor:
    """Z [N, C]: the labeled images' classes diffused over the kNN graph of `features` ((I - alpha Wn) Z = Y)."""
    w = knn_graph(features, k)
    degree = np.asarray(w.sum(axis=1)).ravel()
    inv_sqrt = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0.0)
    wn = scipy.sparse.diags(inv_sqrt) @ w @ scipy.sparse.diags(inv_sqrt)
    system = scipy.sparse.identity(len(features)) - alpha * wn
    labels = labels.numpy()
    scores = np.zeros((len(features), classes))
    for c in range(classes):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue  # a class with no labeled image gets no score
        y = np.zeros(len(features))
        y[members] = 1.0 / len(members)
        scores[:, c], _ = scipy.sparse.linalg.cg(system, y, rtol=1e-6, maxiter=CG_ITERATIONS)
    return torch.from_numpy(scores).float()


def pseudo_labels(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(target class, certainty weight in [0, 1], per class weight) from propagated scores [N, C]; the labeled
    images (labels >= 0) keep their class at weight 1."""
    classes = scores.shape[1]
    probs = F.normalize(scores.clamp_min(0), p=1, dim=1)  # rows that got nothing stay all zero
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    weights = torch.where(probs.sum(1) > 0, 1 - entropy / np.log(classes), torch.zeros(()))
    weights = weights / weights.max().clamp_min(1e-12)
    targets = probs.argmax(1)
    labeled = labels >= 0
    targets[labeled], weights[labeled] = labels[labeled], 1.0
    counts = torch.bincount(targets, minlength=classes).float()
    class_weights = (len(targets) / classes) / counts.clamp_min(1)
    return targets, weights, class_weights
