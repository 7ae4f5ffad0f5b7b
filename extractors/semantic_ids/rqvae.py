"""RQ-VAE (as in TIGER): an MLP encoder, L residual vector-quantisation levels, an MLP decoder.

Training minimises ||x - dec(z_q)||² + Σ_l (||sg(r_l) - e_l||² + β ||r_l - sg(e_l)||²), with the
straight-through estimator z_q = z + sg(Σ e_l - z). Two guards against codebook collapse, the usual
failure of open RQ-VAE code:
- codebooks are initialised with k-means on the residuals of the first batch (level by level);
- every `restart_every` steps, codes that no item in the recent steps chose are restarted from random
  residuals of the current batch at that level.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from extractors.semantic_ids.base import Tokenizer, log, n_distinct
from extractors.semantic_ids.kmeans import kmeans


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class RQVAEModel(nn.Module):
    def __init__(self, dim: int, hidden: list[int], latent: int, levels: int, codes: int):
        super().__init__()
        self.encoder = _mlp([dim, *hidden, latent])
        self.decoder = _mlp([latent, *reversed(hidden), dim])
        self.codebooks = nn.Parameter(torch.zeros(levels, codes, latent))

    def quantize(self, z: torch.Tensor):
        """Codes (N, L), the quantised sum, the per-level residuals, and the VQ losses (sum over levels)."""
        residual = z
        codes, quantized, residuals = [], torch.zeros_like(z), []
        for book in self.codebooks:
            residuals.append(residual)
            idx = torch.cdist(residual.detach(), book.detach()).argmin(1)
            e = book[idx]
            codes.append(idx)
            quantized = quantized + e
            residual = residual - e
        return torch.stack(codes, 1), quantized, residuals

    def forward(self, x: torch.Tensor, beta: float):
        z = self.encoder(x)
        codes, quantized, residuals = self.quantize(z)
        vq = z.new_zeros(())
        for level, r in enumerate(residuals):
            e = self.codebooks[level][codes[:, level]]
            vq = vq + ((r.detach() - e) ** 2).sum(1).mean() + beta * ((r - e.detach()) ** 2).sum(1).mean()
        z_q = z + (quantized - z).detach()  # straight-through estimator
        recon = ((self.decoder(z_q) - x) ** 2).sum(1).mean()
        return recon, vq, codes, residuals


class RQVAE(Tokenizer):
    kind = "rqvae"

    def __init__(self, levels: int = 3, codebook_size: int = 256, preprocess: str = "l2", columns=(), seed: int = 0,
                 hidden: list[int] | tuple[int, ...] = (512, 256), latent_dim: int = 64, epochs: int = 50,
                 batch_size: int = 1024, lr: float = 1e-3, beta: float = 0.25, restart_every: int = 20):
        super().__init__(levels, codebook_size, preprocess, columns, seed)
        self.hidden, self.latent_dim = list(hidden), latent_dim
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.beta, self.restart_every = beta, restart_every
        self.codes = codebook_size
        self.model: RQVAEModel | None = None
        self.history: list[dict] = []

    def params(self) -> dict:
        return {"hidden": self.hidden, "latent_dim": self.latent_dim, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "beta": self.beta, "restart_every": self.restart_every}

    @property
    def level_sizes(self) -> list[int]:
        return [self.codes] * self.levels

    def _fit(self, Z: np.ndarray) -> None:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        distinct = n_distinct(Z)
        self.codes = min(self.codebook_size, distinct)
        if self.codes < self.codebook_size:
            log.warning("only %d distinct vectors for %d codes; the RQ-VAE uses %d codes per level",
                        distinct, self.codebook_size, self.codes)
        model = self.model = RQVAEModel(Z.shape[1], self.hidden, self.latent_dim, self.levels, self.codes)
        X = torch.from_numpy(Z)
        batch = min(self.batch_size, len(Z))
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        usage = torch.zeros(self.levels, self.codes)
        step = 0
        self.history = []
        for epoch in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(Z)))
            totals = np.zeros(2)
            for start in range(0, len(Z), batch):
                xb = X[order[start:start + batch]]
                if step == 0:
                    self._init_codebooks(xb)
                recon, vq, codes, residuals = model(xb, self.beta)
                optimizer.zero_grad()
                (recon + vq).backward()
                optimizer.step()
                for level in range(self.levels):
                    usage[level] += torch.bincount(codes[:, level], minlength=self.codes).float()
                step += 1
                if self.restart_every and step % self.restart_every == 0:
                    self._restart_dead(usage, residuals, rng)
                    usage.zero_()
                totals += [recon.item() * len(xb), vq.item() * len(xb)]
            self.history.append({"epoch": epoch, "recon": totals[0] / len(Z), "vq": totals[1] / len(Z)})
        model.eval()

    @torch.no_grad()
    def _init_codebooks(self, xb: torch.Tensor) -> None:
        """k-means on the first batch's residuals, level by level."""
        residual = self.model.encoder(xb).numpy()
        for level in range(self.levels):
            k = min(self.codes, n_distinct(residual))
            centres, labels = kmeans(residual, k, seed=self.seed + level, max_iter=20)
            if k < self.codes:  # a small first batch: fill the rest with jittered centres
                extra = centres[np.arange(self.codes - k) % k] + 1e-3 * np.random.default_rng(level).standard_normal(
                    (self.codes - k, centres.shape[1])).astype(np.float32)
                centres = np.concatenate([centres, extra])
            self.model.codebooks.data[level] = torch.from_numpy(centres)
            residual = residual - centres[labels]

    @torch.no_grad()
    def _restart_dead(self, usage: torch.Tensor, residuals: list[torch.Tensor], rng: np.random.Generator) -> None:
        for level in range(self.levels):
            dead = torch.nonzero(usage[level] == 0).flatten()
            if len(dead):
                r = residuals[level].detach()
                pick = torch.from_numpy(rng.integers(len(r), size=len(dead)))
                self.model.codebooks.data[level, dead] = r[pick] + 1e-4 * torch.randn(len(dead), r.shape[1])

    @torch.no_grad()
    def _encode(self, Z: np.ndarray) -> np.ndarray:
        return np.concatenate([self.model.quantize(self.model.encoder(torch.from_numpy(Z[s:s + 8192])))[0].numpy()
                               for s in range(0, len(Z), 8192)])

    @torch.no_grad()
    def _decode(self, codes: np.ndarray) -> np.ndarray:
        books = self.model.codebooks
        c = torch.from_numpy(codes)
        z_q = sum(books[level][c[:, level]] for level in range(self.levels))
        return self.model.decoder(z_q).numpy()

    @torch.no_grad()
    def _last_level_distances(self, Z: np.ndarray) -> np.ndarray:
        z = self.model.encoder(torch.from_numpy(Z))
        _, _, residuals = self.model.quantize(z)
        return (torch.cdist(residuals[-1], self.model.codebooks[-1]) ** 2).numpy()

    def tensors(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def load_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        self.codes = tensors["codebooks"].shape[1]
        self.model = RQVAEModel(self.dim, self.hidden, self.latent_dim, self.levels, self.codes)
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
        self.model.eval()
