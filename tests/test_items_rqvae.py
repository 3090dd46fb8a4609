"""RQ-VAE learns on a small clustered synthetic set, uses its codebooks, and is deterministic."""

from __future__ import annotations

import numpy as np

from llmrec.items.quantizers import QuantizerConfig, RQVAEConfig, load_quantizer, make_quantizer
from llmrec.items.semantic_ids import SemanticIds


def clustered(n: int = 400, d: int = 16, k: int = 8, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    return (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d)) * 0.3).astype(np.float32)


CONFIG = QuantizerConfig(
    kind="rqvae", levels=2, codebook_size=8, seed=0,
    rqvae=RQVAEConfig(latent_dim=8, hidden_dims=(32,), max_epochs=40, patience=40, batch_size=64, lr=3e-3),
)


def test_rqvae_learns_uses_codebooks_and_is_deterministic(tmp_path):
    x = clustered()
    q = make_quantizer(CONFIG)
    codes = q.fit(x)
    hist = q.history
    assert len(hist) == 40
    assert hist[-1]["recon"] < 0.5 * hist[0]["recon"]  # reconstruction loss falls
    assert codes.shape == (400, 2) and ((codes >= 0) & (codes < 8)).all()
    assert len(np.unique(codes[:, 0])) >= 7 and len(np.unique(codes[:, 1])) >= 6  # no codebook collapse
    rel = ((q.reconstruct(codes) - x) ** 2).sum(1).mean() / (x**2).sum(1).mean()
    assert rel < 0.2
    again = make_quantizer(CONFIG)
    assert np.array_equal(again.fit(x), codes)  # same seed, same codes
    assert np.array_equal(again.reconstruct(codes), q.reconstruct(codes))
    q.save(tmp_path)
    assert np.array_equal(load_quantizer(tmp_path).encode(x), q.encode(x))
    sids = SemanticIds.from_quantized([str(i) for i in range(400)], codes, q.codebook_sizes, quantizer=q)
    assert sids.unique_fraction == 1.0
    assert sids.codebook_vectors().shape == (len(sids.token_strings()), 8)  # latent codebooks + extra level
