"""RQ-VAE (TIGER-style) in torch: MLP encoder -> residual codebooks -> MLP decoder.

Guards against the failure modes peers hit: codebooks start from residual k-means on the first batch's
latents; reconstruction loss is summed over dimensions (averaging shrinks it next to the quantization loss
and collapses codebooks); codes unused during an epoch restart at random recent residuals; training stops
early on a validation split of items and keeps the best weights. Seeded and single-process: same seed, same codes.

Memory has a fixed ceiling whatever the catalogue size: training gathers one mini-batch of ``batch_size`` rows
at a time from the input array (no shuffled copy of it), the codebooks start from k-means on a sample of
``init_batch_size`` items, and validation, encoding and decoding run in chunks of ``chunk_size`` rows
(``max_train_items`` trains on a sample and encodes every item). Only
index vectors (``[n]`` int64) grow with the catalogue. On CUDA (``device``) only those batches and chunks move to
the GPU.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from llmrec.errors import ConfigError
from llmrec.items.quantizers import Quantizer, capped_size, kmeans, nearest, row_chunks
from llmrec.progress import progress

logger = logging.getLogger(__name__)


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAEModule(nn.Module):
    def __init__(self, in_dim: int, hidden: tuple[int, ...], latent: int, levels: int, size: int, beta: float):
        super().__init__()
        self.encoder = _mlp([in_dim, *hidden, latent])
        self.decoder = _mlp([latent, *reversed(hidden), in_dim])
        self.codebooks = nn.ParameterList([nn.Parameter(torch.zeros(size, latent)) for _ in range(levels)])
        self.beta = beta

    def quantize(self, z: torch.Tensor):
        """Returns (quantized latent, codes [n, L], per-sample quantization loss, residual per level)."""
        residual, quant = z, torch.zeros_like(z)
        codes, residuals = [], []
        loss = torch.zeros(z.shape[0], device=z.device)
        for book in self.codebooks:
            dist = (residual.detach() ** 2).sum(1, keepdim=True) - 2 * residual.detach() @ book.T + (book**2).sum(1)
            idx = dist.argmin(dim=1)
            emb = book[idx]
            # codebook term moves the code towards the residual; commitment (beta) the encoder towards the code
            loss = loss + ((residual.detach() - emb) ** 2).sum(1) + self.beta * ((residual - emb.detach()) ** 2).sum(1)
            residuals.append(residual.detach())
            codes.append(idx)
            quant = quant + emb
            residual = residual - emb.detach()
        return quant, torch.stack(codes, 1), loss, residuals

    def forward(self, x: torch.Tensor):
        z = self.encoder(x)
        quant, codes, q_loss, residuals = self.quantize(z)
        x_hat = self.decoder(z + (quant - z).detach())  # straight-through estimator
        recon = ((x_hat - x) ** 2).sum(1)  # summed over dimensions, not averaged
        return recon, q_loss, codes, residuals


class RQVAEQuantizer(Quantizer):
    """Quantizer interface over ``RQVAEModule``; codebooks live in the latent space (``latent_dim``)."""

    kind = "rqvae"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.module: RQVAEModule | None = None
        self.history: list[dict[str, float]] = []
        self._books: list[np.ndarray] = []

    def _new_module(self, in_dim: int, size: int) -> RQVAEModule:
        c = self.config.rqvae
        with torch.random.fork_rng():
            torch.manual_seed(self.config.seed)
            return RQVAEModule(in_dim, tuple(c.hidden_dims), c.latent_dim, self.config.levels, size, c.beta)

    @property
    def device(self) -> torch.device:
        """CUDA when ``device`` is ``cuda``, or ``auto`` and torch sees a GPU; else the CPU."""
        if self.config.device == "cpu":
            return torch.device("cpu")
        if torch.cuda.is_available():
            return torch.device("cuda")
        if self.config.device == "cuda":
            raise ConfigError("quantizer.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
        return torch.device("cpu")

    def _rows(self, data: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` of the (host) input, on the training device: the only copies of input rows made."""
        return data[index].to(self.device)

    def _fit(self, x: np.ndarray) -> None:
        cfg, rc = self.config, self.config.rqvae
        gen = torch.Generator().manual_seed(cfg.seed)
        data = torch.from_numpy(x)  # shares the input's memory; batches are gathered from it by index
        perm = torch.randperm(len(x), generator=gen)
        if 0 < rc.max_train_items < len(x):  # a random sample (the permutation's head) stands for the catalogue
            perm = perm[: rc.max_train_items]
        n_val = int(round(len(perm) * rc.val_fraction)) if len(perm) >= 20 else 0
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        size = capped_size(cfg.codebook_size, len(train_idx), cfg.min_points_per_code)
        self.module = model = self._new_module(x.shape[1], size).to(self.device)
        self.codebook_sizes = (size,) * cfg.levels
        init = torch.randperm(len(train_idx), generator=gen)[: max(rc.init_batch_size, size)]
        self._kmeans_init(self._rows(data, train_idx[init]))
        opt = torch.optim.Adam(model.parameters(), lr=rc.lr)
        best, best_state, stale = math.inf, None, 0
        self.history = []
        for epoch in (epochs := progress(range(rc.max_epochs), desc="RQ-VAE epochs", unit="epoch")):
            model.train()
            usage = torch.zeros(cfg.levels, size, dtype=torch.long, device=self.device)
            pool: list[list[torch.Tensor]] = [[] for _ in range(cfg.levels)]
            totals = np.zeros(2)
            for batch in torch.randperm(len(train_idx), generator=gen).split(rc.batch_size):
                recon, q_loss, codes, residuals = model(self._rows(data, train_idx[batch]))
                loss = (recon + q_loss).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                totals += [recon.sum().item(), q_loss.sum().item()]
                for level in range(cfg.levels):
                    usage[level] += torch.bincount(codes[:, level], minlength=size)
                    pool[level] = (pool[level] + [residuals[level]])[-16:]  # recent residuals for restarts
            restarted = self._restart_dead(usage, pool, gen) if rc.dead_code_restart else 0
            val_loss = self._eval_loss(data, val_idx) if n_val else float(totals.sum() / len(train_idx))
            self.history.append({
                "epoch": epoch, "recon": float(totals[0] / len(train_idx)),
                "quant": float(totals[1] / len(train_idx)),
                "val_loss": val_loss, "used_first": float((usage[0] > 0).float().mean()), "restarted": restarted,
            })
            epochs.set_postfix(val_loss=val_loss)
            if val_loss < best * (1 - 1e-4):
                best, stale = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= rc.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        self._books = [b.detach().cpu().numpy().copy() for b in model.codebooks]
        logger.info("rqvae: %d epochs, best validation loss %.4f", len(self.history), best)

    @torch.no_grad()
    def _kmeans_init(self, batch: torch.Tensor) -> None:
        assert self.module is not None
        residual = self.module.encoder(batch).cpu().numpy().astype(np.float32)
        cfg, gpu = self.config, self.faiss_gpu
        for level, book in enumerate(self.module.codebooks):
            centroids = kmeans(residual, book.shape[0], cfg.seed + level, cfg.kmeans_iters,
                               cfg.max_points_per_centroid, gpu)
            book.copy_(torch.from_numpy(centroids))
            residual = residual - centroids[nearest(residual, centroids, gpu)]

    @torch.no_grad()
    def _restart_dead(self, usage: torch.Tensor, pool: list[list[torch.Tensor]], gen: torch.Generator) -> int:
        assert self.module is not None
        restarted = 0
        for level, book in enumerate(self.module.codebooks):
            dead = (usage[level] == 0).nonzero().flatten()
            if len(dead) == 0 or not pool[level]:
                continue
            candidates = torch.cat(pool[level])
            pick = torch.randint(len(candidates), (len(dead),), generator=gen)
            book[dead] = candidates[pick.to(candidates.device)]
            restarted += len(dead)
        return restarted

    @torch.no_grad()
    def _eval_loss(self, data: torch.Tensor, index: torch.Tensor) -> float:
        """Mean loss over rows ``index``, in chunks of ``chunk_size`` rows (one chunk: the plain mean)."""
        assert self.module is not None
        self.module.eval()
        total = 0.0
        for lo, hi in row_chunks(len(index), self.config.chunk_size):
            recon, q_loss, _, _ = self.module(self._rows(data, index[lo:hi]))
            total += float((recon + q_loss).mean()) * ((hi - lo) / len(index))
        return total

    @torch.no_grad()
    def latents(self, x: np.ndarray) -> np.ndarray:
        """Encoder outputs ``[n, latent_dim]``, computed in chunks of ``chunk_size`` rows."""
        assert self.module is not None
        out = [self.module.encoder(torch.from_numpy(np.ascontiguousarray(x[lo:hi])).to(self.device)).cpu().numpy()
               for lo, hi in row_chunks(len(x), self.config.chunk_size)]
        return np.concatenate(out).astype(np.float32)

    def _prefix_and_residual(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        residual = self.latents(x)
        codes = np.zeros((len(x), self.config.levels - 1), dtype=np.int64)
        gpu = self.faiss_gpu
        for level, book in enumerate(self._books[:-1]):
            codes[:, level] = nearest(residual, book, gpu)
            residual = residual - book[codes[:, level]]
        return codes, residual

    def _residual(self, x: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        residual = self.latents(x)
        for level, book in enumerate(self._books[:-1]):
            residual = residual - book[prefix[:, level]]
        return residual

    @property
    def codebooks(self) -> list[np.ndarray]:
        return self._books

    @torch.no_grad()
    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        self._check_fitted()
        assert self.module is not None
        codes = np.asarray(codes, dtype=np.int64)
        out = []
        for lo, hi in row_chunks(len(codes), self.config.chunk_size):
            quant = sum(torch.from_numpy(book[codes[lo:hi, level]]) for level, book in enumerate(self._books))
            out.append(self.module.decoder(quant.to(self.device)).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.input_dim or 0), np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        assert self.module is not None
        return {k: v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}

    def _load_state(self, tensors: dict[str, np.ndarray]) -> None:
        assert self.input_dim is not None
        self.module = self._new_module(self.input_dim, self.codebook_sizes[0])
        self.module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
        self.module.to(self.device).eval()
        self._books = [b.detach().cpu().numpy().copy() for b in self.module.codebooks]
