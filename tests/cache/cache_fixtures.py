"""Small modules and datasets for the FeatureCache tests."""
import torch
from torch.utils.data import Dataset


class CountingNet(torch.nn.Module):
    """A tiny conv net with BatchNorm that counts the samples it has seen."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2))
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.body(x)


class Images(Dataset):
    """(x [3, 8, 8], label) items with an optional transform, like torchvision datasets."""

    def __init__(self, n=40, transform=None, labels=True, seed=0, fail_after=None):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.y = torch.randint(0, 5, (n,), generator=g)
        self.transform, self.labels, self.fail_after = transform, labels, fail_after
        self.reads = 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        x = self.x[i] if self.transform is None else self.transform(self.x[i])
        return (x, self.y[i]) if self.labels else x


def expected(module, x):
    """What the cache must hold: the module's eval-mode output, its mode restored."""
    was = module.training
    module.eval()
    with torch.no_grad():
        out = module.body(x)
    module.train(was)
    return out
