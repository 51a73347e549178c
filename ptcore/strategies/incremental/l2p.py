"""Learning to Prompt (L2P, Wang et al. CVPR 2022, "Learning to prompt for continual
learning") on a frozen timm Vision Transformer. A pool of ``l2p_pool`` prompts (each
``l2p_length`` tokens) has one key each; the frozen ViT's [CLS] feature of a sample (the
query: what ``stages(model)[:-1]`` outputs, read once per task from a FeatureCache when the
data is deterministic) picks the ``l2p_top`` keys of highest cosine, and their prompts go
in front of the patch tokens (after the class token) of the same frozen ViT. The mean of the
prompt tokens' outputs goes to the head (L2P's "prompt" head). Only the prompts, the keys
and the head train: cross-entropy over the task's own rows (L2P's class mask: the other
rows' logits are -inf) minus 0.1 × the mean summed cosine of the chosen keys to the query,
which pulls the keys towards the queries that choose them."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ptcore import engine
from ptcore.data import is_deterministic
from ptcore.models import freeze as freeze_module
from ptcore.strategies.distill.data import WithTeacherRows
from ptcore.strategies.incremental.features import Backbone, backbone_features
from ptcore.strategies.incremental.registry import Method, register

__all__ = ["PromptPool", "Prompted", "L2P", "MATCH_WEIGHT"]

MATCH_WEIGHT = 0.1  # the key-query term's weight (L2P's code: pull_constraint_coeff)


class PromptPool(nn.Module):
    """``pool`` prompts of ``length`` tokens of width ``dim`` and their keys, drawn
    uniformly from [-1, 1) (L2P's initialisation) by a generator seeded with ``seed``."""

    def __init__(self, pool: int, length: int, top: int, dim: int, seed: int = 0):
        super().__init__()
        for name, v in (("l2p_pool", pool), ("l2p_length", length), ("l2p_top", top)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if top > pool:
            raise ValueError(f"l2p_top ({top}) must be at most l2p_pool ({pool})")
        g = torch.Generator().manual_seed(seed)
        self.prompts = nn.Parameter(torch.rand(pool, length, dim, generator=g) * 2 - 1)
        self.keys = nn.Parameter(torch.rand(pool, dim, generator=g) * 2 - 1)
        self.top = top

    def forward(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prompts [B, top·length, dim], chosen pool indices [B, top], the matching term:
        the mean over the batch of the summed cosines of the chosen keys to the query)."""
        sim = F.normalize(query.float(), dim=1) @ F.normalize(self.keys, dim=1).T  # [B, M]
        chosen, idx = sim.topk(self.top, dim=1)
        return self.prompts[idx].flatten(1, 2), idx, chosen.sum(1).mean()


class Prompted(nn.Module):
    """A timm VisionTransformer ``vit`` with prompts from ``pool`` chosen by ``query``."""

    def __init__(self, vit: nn.Module, pool: PromptPool):
        super().__init__()
        self.vit, self.pool = vit, pool

    def forward(self, x: torch.Tensor, query: torch.Tensor):
        """(logits [B, C], chosen pool indices [B, top], matching term)."""
        vit = self.vit
        prompts, idx, match = self.pool(query)
        tokens = vit._pos_embed(vit.patch_embed(x))
        n = vit.num_prefix_tokens
        tokens = torch.cat([tokens[:, :n], prompts.to(tokens.dtype), tokens[:, n:]], 1)
        tokens = vit.norm(vit.blocks(vit.norm_pre(vit.patch_drop(tokens))))
        feats = tokens[:, n:n + prompts.shape[1]].mean(1)
        return vit.head(vit.head_drop(vit.fc_norm(feats))), idx, match


def _vit(run) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    vit = run.model.model
    if not isinstance(vit, VisionTransformer):
        raise TypeError(f"l2p prompts a timm VisionTransformer (e.g. --model "
                        f"timm/vit_tiny_patch16_224), got {type(vit).__name__}")
    return vit


@register
class L2P(Method):
    name = "l2p"
    help = ("alone: a frozen timm ViT with a pool of l2p_pool prompts of l2p_length tokens, "
            "l2p_top chosen per sample by its [CLS] query; prompts, keys and head train")
    alone = True
    trains = False  # its own loop: the prompted forward is not the model's
    unmixed = "its queries are cached per sample"
    state_key = "prompts"

    def __init__(self, options, parts):
        super().__init__(options, parts)
        PromptPool(options.l2p_pool, options.l2p_length, options.l2p_top, 1)  # checks
        self.sizes = (options.l2p_pool, options.l2p_length, options.l2p_top)
        self.seed = options.seed
        self.pool: PromptPool | None = None
        self._loaded: dict | None = None

    def _prompted(self, run) -> Prompted:
        vit = _vit(run)
        if self.pool is None:
            pool, length, top = self.sizes
            self.pool = PromptPool(pool, length, top, vit.embed_dim, self.seed).to(run.device)
            if self._loaded is not None:  # resumed
                self.pool.load_state_dict(self._loaded)
                self._loaded = None
        # the backbone stays frozen throughout (eval mode, no gradients): only the head trains
        for name, child in vit.named_children():
            if child is not vit.head:
                freeze_module(child)
        for p in vit.parameters(recurse=False):
            p.requires_grad_(False)
        return Prompted(vit, self.pool)

    def _queries(self, run, data):
        """``data`` with each sample's query: cached when the data is deterministic."""
        if not run.cache or not is_deterministic(data):
            return data, False
        from ptcore.cache import FeatureCache

        cache = FeatureCache(Backbone(run.model), data, dtype=torch.float32, device=run.device,
                             progress=run.fit_args["progress"],
                             num_workers=run.fit_args["num_workers"]).build()
        return WithTeacherRows(data, cache), True

    def after_training(self, run, t, train):
        model = self._prompted(run)
        start, stop = run.plan.spans[t]
        data, cached = self._queries(run, train[t])

        def step(model, batch):
            x, y, *rest = batch
            if cached:
                query = rest[0]
            else:
                with torch.no_grad():
                    query = backbone_features(run.model, x)
            logits, _, match = model(x, query)
            logits = logits.float()
            # L2P's class mask: only the task's own classes compete in training
            masked = torch.full_like(logits, float("-inf"))
            masked[:, start:stop] = logits[:, start:stop]
            loss = F.cross_entropy(masked, y, label_smoothing=run.label_smoothing)
            return {"loss": loss - MATCH_WEIGHT * match, "match": match.detach(),
                    "accuracy": (masked.argmax(-1) == y).float().mean()}

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = engine.make_optimizer([{"params": params, "weight_decay": 0.0}],
                                          lr=run.lr, **run.optim)
        run.history[-1] = engine.fit(model, data, optimizer, step_fn=step, device=run.device,
                                     seed=run.seed + t, meta={"task": t, "method": run.method},
                                     **run.fit_args)

    def scores(self, run, x):
        if self.pool is None and self._loaded is None:
            return None
        query = backbone_features(run.model, x)
        return self._prompted(run)(x, query)[0]

    def state_dict(self):
        return self.pool.state_dict() if self.pool is not None else self._loaded

    def load_state_dict(self, state, device):
        if state is not None:
            sizes = (state["prompts"].shape[0], state["prompts"].shape[1], self.sizes[2])
            if sizes != self.sizes:
                raise ValueError(f"the checkpoint's prompt pool (l2p_pool, l2p_length) = "
                                 f"{sizes[:2]}, this run's {self.sizes[:2]}")
        self.pool, self._loaded = None, state
