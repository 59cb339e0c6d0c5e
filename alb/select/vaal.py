"""VAAL (Sinha et al. 2019) on feature vectors: a VAE learns a latent space of labelled and
unlabelled samples, a discriminator learns to tell them apart in it, and the VAE is trained
adversarially to fool it; the samples the discriminator finds least "labelled" are queried.

Differences from the paper, stated in docs/strategies.md: the VAE encodes the detector's or
classifier's feature vectors (image features, or object features as in NORIS supp. Sec. 4),
not raw pixels, so it is a selection function on arrays and costs seconds; its encoder and
decoder are two-layer MLPs. The objective is the paper's: reconstruction + beta x KL +
adversarial term for the VAE, binary cross-entropy for the discriminator."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from alb.select._backend import default_device


class _VAE(nn.Module):
    def __init__(self, dim: int, hidden: int, latent: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decoder(z), mu, logvar


def vaal_scores(labelled: np.ndarray, unlabelled: np.ndarray, seed: int, steps: int = 500, batch_size: int = 64,
                latent: int = 32, hidden: int = 256, lr: float = 5e-4, beta: float = 1.0,
                adversary: float = 1.0) -> np.ndarray:
    """(len(unlabelled),) in [0, 1]: 1 - D(mu(x)), the discriminator's belief that an
    unlabelled row is not labelled-like (higher = query first). Rows are (n, D) features,
    standardised together; `steps` alternating VAE / discriminator updates on batches drawn
    with replacement from each set; seeded, deterministic on the CPU."""
    if len(labelled) == 0 or len(unlabelled) == 0:
        return np.ones(len(unlabelled))
    device = default_device()
    generator = torch.Generator().manual_seed(int(seed))
    both = np.concatenate([labelled, unlabelled]).astype(np.float32)
    mean, std = both.mean(axis=0), both.std(axis=0) + 1e-6
    lab = torch.as_tensor((labelled - mean) / std, dtype=torch.float32, device=device)
    unl = torch.as_tensor((unlabelled - mean) / std, dtype=torch.float32, device=device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seed))
        vae = _VAE(lab.shape[1], hidden, latent).to(device)
        discriminator = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, 1)).to(device)
        vae_opt = torch.optim.Adam(vae.parameters(), lr=lr)
        disc_opt = torch.optim.Adam(discriminator.parameters(), lr=lr)
        ones = torch.ones(batch_size, 1, device=device)
        for _ in range(steps):
            xl = lab[torch.randint(len(lab), (batch_size,), generator=generator).to(device)]
            xu = unl[torch.randint(len(unl), (batch_size,), generator=generator).to(device)]
            x = torch.cat([xl, xu])
            recon, mu, logvar = vae(x)
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1).mean()
            fool = F.binary_cross_entropy_with_logits(discriminator(mu), torch.cat([ones, ones]))
            vae_loss = F.mse_loss(recon, x) + beta * kl + adversary * fool
            vae_opt.zero_grad(set_to_none=True)
            vae_loss.backward()
            vae_opt.step()
            with torch.no_grad():
                _, mu, _ = vae(x)
            disc_loss = F.binary_cross_entropy_with_logits(discriminator(mu), torch.cat([ones, 0 * ones]))
            disc_opt.zero_grad(set_to_none=True)
            disc_loss.backward()
            disc_opt.step()
        with torch.no_grad():
            mu = vae.encoder(unl).chunk(2, dim=1)[0]
            labelled_like = torch.sigmoid(discriminator(mu)).squeeze(1)
    return (1.0 - labelled_like).double().cpu().numpy()
