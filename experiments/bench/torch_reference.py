"""The train benchmark's models in PyTorch eager, timed in a process of their own.

PyTorch is not a zkynet dependency, and in one process with JAX the two thread
pools fight over the cores. So `experiments.bench train` starts this file with an
interpreter that has torch (`--torch-python`) and drives it over a pipe, one
timing round at a time alternating with its own rounds:
    python torch_reference.py MODEL BATCH     then per stdin line "STEPS WARMUP":
    it runs WARMUP untimed steps, then STEPS timed ones, and prints the seconds per step.
Only torch and numpy are imported here (the other interpreter has nothing else).
"""

import math
import sys
import time

import numpy as np
import torch

LR = 1e-3  # the same Adam as the zkynet and JAX steps


def sinusoidal_positions(length, dim):
    """zkynet.models.transformer.sinusoidal_positions, in NumPy (no JAX here)."""
    positions = np.arange(length)[:, None]
    rates = np.exp(-math.log(10000.0) * np.arange(0, dim, 2) / dim)
    table = np.zeros((length, dim), np.float32)
    table[:, 0::2] = np.sin(positions * rates)
    table[:, 1::2] = np.cos(positions * rates)[:, : dim // 2]
    return table


def _token_loss(out, y):
    return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


class LSTMLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.lstm = torch.nn.Embedding(64, 64), torch.nn.LSTM(64, 128, batch_first=True)
        self.head = torch.nn.Linear(128, 64)

    def forward(self, tokens):
        return self.head(self.lstm(self.embed(tokens))[0])


class TransformerLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(64, 128)
        self.register_buffer("positions", torch.tensor(sinusoidal_positions(64, 128)))
        layer = torch.nn.TransformerEncoderLayer(
            128, 4, 512, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm, self.head = torch.nn.LayerNorm(128), torch.nn.Linear(128, 64)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(64))

    def forward(self, tokens):
        x = self.blocks(self.embed(tokens) + self.positions, mask=self.mask, is_causal=True)
        return self.head(self.norm(x))


def build(kind, batch):
    """(model, x, y, loss) for one of the train benchmark's cases."""
    nn, functional = torch.nn, torch.nn.functional
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        return model, torch.randn(batch, 64), torch.randint(0, 10, (batch,)), functional.cross_entropy
    if kind == "cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
        return model, torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,)), functional.cross_entropy
    if kind == "autoencoder":
        model = nn.Sequential(
            nn.Linear(784, 256),
            nn.ReLU(),
            nn.Linear(256, 32),
            nn.Linear(32, 256),
            nn.ReLU(),
            nn.Linear(256, 784),
            nn.Sigmoid(),
        )
        x = torch.rand(batch, 784)
        return model, x, x, functional.mse_loss
    steps, model = {"lstm": (32, LSTMLM), "transformer": (64, TransformerLM)}[kind]
    return model(), torch.randint(0, 64, (batch, steps)), torch.randint(0, 64, (batch, steps)), _token_loss


def main(kind, batch):
    torch.manual_seed(0)
    model, x, y, loss = build(kind, int(batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def step():
        optimizer.zero_grad()
        value = loss(model(x), y)
        value.backward()
        optimizer.step()
        return value.item()

    step(), step()  # warm up
    print("ready", flush=True)
    for line in sys.stdin:
        steps, warmup = map(int, line.split())
        for _ in range(warmup):  # as the other contenders' rounds start
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        print((time.perf_counter() - start) / steps, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
