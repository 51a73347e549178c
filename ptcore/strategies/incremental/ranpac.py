"""RanPAC (McDonnell et al. 2023) on a frozen backbone: features φ go through a fixed random
projection and a ReLU, h = ReLU(φ·P) (P: [d, M] Gaussian), and a ridge-regression
classifier W = (G + λI)⁻¹ Q is solved in closed form from the Gram matrix G = Σ h hᵀ and
Q = Σ h yᵀ (one-hot targets). G and Q are sums over samples, so a task adds its own and the
solution is the one a batch solve over all tasks' data would give, without keeping any."""
from __future__ import annotations

import torch

from ptcore.runtime import distributed as D
from ptcore.strategies.incremental.features import Backbone, backbone_features
from ptcore.strategies.incremental.registry import Method, register

__all__ = ["RanPAC", "RanPACMethod"]


class RanPAC:
    """``dim`` random features (M), ridge ``lam`` (λ), the projection drawn from ``seed``."""

    def __init__(self, dim: int = 1024, lam: float = 1.0, seed: int = 0):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"ranpac_dim must be a positive int, got {dim!r}")
        if not lam > 0:
            raise ValueError(f"ranpac_ridge must be > 0, got {lam!r}")
        self.dim, self.lam, self.seed = dim, float(lam), seed
        self.projection: torch.Tensor | None = None  # [d, M]
        self.G: torch.Tensor | None = None           # [M, M] float64
        self.Q: torch.Tensor | None = None           # [M, C] float64
        self.W: torch.Tensor | None = None           # [M, C] float32, the solved classifier

    def expand(self, feats: torch.Tensor) -> torch.Tensor:
        """h = ReLU(φ·P), [n, M]."""
        if self.projection is None:
            g = torch.Generator().manual_seed(self.seed)
            self.projection = torch.randn(feats.shape[1], self.dim, generator=g)
        return torch.relu(feats.float() @ self.projection.to(feats.device))

    def update(self, feats: torch.Tensor, labels: torch.Tensor, classes: int) -> None:
        """Add the statistics of ``feats`` [n, d] labelled ``labels`` (head rows, < classes)
        and solve again. Under DDP each process passes its share; G and Q are summed."""
        h = self.expand(feats).double()
        onehot = torch.zeros(len(labels), classes, dtype=torch.float64, device=h.device)
        onehot[torch.arange(len(labels), device=h.device), labels.to(h.device)] = 1.0
        G, Q = D.all_sum(h.T @ h), D.all_sum(h.T @ onehot)
        if self.G is not None:
            G = G + self.G.to(h.device)
            Q[:, : self.Q.shape[1]] += self.Q.to(h.device)
        self.G, self.Q = G, Q
        self.solve()

    def solve(self) -> None:
        eye = torch.eye(self.dim, dtype=torch.float64, device=self.G.device)
        self.W = torch.linalg.solve(self.G + self.lam * eye, self.Q).float()

    def scores(self, feats: torch.Tensor) -> torch.Tensor:
        """[n, C] class scores of features [n, d] (argmax = prediction)."""
        return self.expand(feats) @ self.W.to(feats.device)

    def state_dict(self) -> dict:
        return {"dim": self.dim, "lam": self.lam, "projection": self.projection, "G": self.G,
                "Q": self.Q, "W": self.W}

    def load_state_dict(self, state: dict) -> None:
        if (state["dim"], state["lam"]) != (self.dim, self.lam):
            raise ValueError(f"the checkpoint's RanPAC (dim {state['dim']}, ridge "
                             f"{state['lam']}) differs from this one's (dim {self.dim}, "
                             f"ridge {self.lam})")
        self.projection, self.G, self.Q, self.W = (state[k] for k in ("projection", "G", "Q",
                                                                       "W"))


@register
class RanPACMethod(Method):
    name = "ranpac"
    help = ("alone: frozen backbone, ranpac_dim random ReLU features, closed-form ridge "
            "classifier (ranpac_ridge)")
    alone = True
    trains = False
    unmixed = "it trains nothing"
    every_class = True
    state_key = "ranpac"

    def __init__(self, options, parts):
        super().__init__(options, parts)
        self.ranpac = RanPAC(options.ranpac_dim, options.ranpac_ridge, options.seed)

    def after_task(self, run, t, train):
        from ptcore.cache import FeatureCache

        # frozen backbone: each sample's features once
        cache = FeatureCache(Backbone(run.model), train[t], dtype=torch.float32,
                             device=run.device, shard=True,
                             progress=run.fit_args["progress"]).build()
        self.ranpac.update(cache.get(slice(None)), cache.labels, run.plan.spans[t][1])

    def scores(self, run, x):
        return self.ranpac.scores(backbone_features(run.model, x))

    def state_dict(self):
        return self.ranpac.state_dict()

    def load_state_dict(self, state, device):
        self.ranpac.load_state_dict(state)
