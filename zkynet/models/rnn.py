"""Recurrent networks: Elman RNN, LSTM and GRU cells, a batch-first sequence layer
that runs any of them (with masks for padded sequences), and language-model /
classifier heads on top.

How a sequence is run. The input projection x @ W + b of every time step is one
big matmul outside the recurrence; only h @ U stays inside. The recurrence then
runs as one `op.scan` node by default: the cell's graph is traced once, so the
compiled program and its compile time stay flat as sequences get longer, and
the backward pass is a reverse scan applying zkynet's own back() to each step
(backpropagation through time). `unroll=True` instead calls the cell once per
step in Python: the graph shows every step (good for pictures and for learning)
and the compiled program grows with the sequence length (see
`python -m experiments.bench train --models lstm` for both compile times).
"""

import itertools

import jax
import jax.numpy as jnp

from zkynet import init
from zkynet.framework import cg, op
from zkynet.models.fcn import Linear
from zkynet.models.layers import Embedding


def _gates(x, count, size):
    """The `count` consecutive blocks of `size` features of x's last axis."""
    return [x[..., i * size : (i + 1) * size] for i in range(count)]


class RNNCell(cg.Module):
    """Elman: h' = tanh(x_proj + h U)."""

    gates = 1

    def __init__(self, hidden, key=0):
        super().__init__(
            inputs=(cg.Variable("x"), cg.Variable("h")),
            params=(cg.Parameter("U", init.glorot_uniform(key, (hidden, hidden))),),
        )

    def call(self, x, h):
        return op.tanh(x + h @ self.param("U"))


class LSTMCell(cg.Module):
    """Long short-term memory: input, forget, cell and output gates from
    x_proj + h U; c' = f c + i g, h' = o tanh(c'), as one op.lstm_update node (its
    own backward rule: one array for the four gates' gradient, see op.LSTMUpdate)."""

    gates = 4

    def __init__(self, hidden, key=0):
        super().__init__(
            inputs=(cg.Variable("x"), cg.Variable("h"), cg.Variable("c")),
            params=(cg.Parameter("U", init.glorot_uniform(key, (hidden, 4 * hidden))),),
        )
        self.hidden = hidden

    def call(self, x, h, c):
        state = op.lstm_update(x + h @ self.param("U"), c)  # [h', c']
        return state[..., : self.hidden], state[..., self.hidden :]


class GRUCell(cg.Module):
    """Gated recurrent unit (PyTorch's formulation): r and z gates, candidate
    n = tanh(x_n + r (h U_n + b_n)), h' = (1 - z) n + z h."""

    gates = 3

    def __init__(self, hidden, key=0):
        super().__init__(
            inputs=(cg.Variable("x"), cg.Variable("h")),
            params=(
                cg.Parameter("U", init.glorot_uniform(key, (hidden, 3 * hidden))),
                cg.Parameter("b_n", jnp.zeros(hidden)),
            ),
        )
        self.hidden = hidden

    def call(self, x, h):
        x_r, x_z, x_n = _gates(x, 3, self.hidden)
        h_r, h_z, h_n = _gates(h @ self.param("U"), 3, self.hidden)
        r, z = op.sigmoid(x_r + h_r), op.sigmoid(x_z + h_z)
        n = op.tanh(x_n + r * (h_n + self.param("b_n")))
        return (1 - z) * n + z * h


CELLS: dict[str, type[RNNCell | LSTMCell | GRUCell]] = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


class _Masked(cg.Module):
    """A cell that keeps its state where the mask is False (padding)."""

    def __init__(self, cell):
        super().__init__(
            inputs=[cg.Variable("x"), cg.Variable("mask")] + [cg.Variable(v.short_name) for v in cell.inputs[1:]],
            name=cell.functional_name,
        )
        self.cell = cell

    def call(self, x, mask, *state):
        new = self.cell(x, *state)
        new = new if isinstance(new, tuple) else (new,)
        keep = op.reshape(mask, mask.shape + (1,))
        return tuple(op.where(keep, n, s) for n, s in zip(new, state, strict=True))


class Recurrent(cg.Module):
    """A cell ("rnn", "lstm" or "gru") run over batch-first inputs (B, T, features).
    Returns (outputs (B, T, hidden), final state tuple: (h,) or (h, c)). With a
    `mask` (B, T) of valid positions, padded steps leave the state unchanged."""

    def __init__(self, cell, input_size, hidden, unroll=False, key=0):
        super().__init__(inputs=(cg.Variable("x"), cg.Variable("mask", optional=True)))
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")
        k1, k2 = jax.random.split(init.key_of(key))
        self.cell = CELLS[cell](hidden, key=k2)
        self.project = Linear(input_size, self.cell.gates * hidden, key=k1)
        self.hidden, self.unroll = hidden, unroll
        self.masked = _Masked(self.cell)

    def call(self, x, mask=None):
        batch, steps = x.shape[:2]
        step = self.cell if mask is None else self.masked
        if self.unroll:
            projected = self.project(x)
            state = [jnp.zeros((batch, self.hidden), projected.dtype) for _ in self.cell.inputs[1:]]
            sequences = [projected] if mask is None else [projected, mask]
            outputs = []
            for t in range(steps):
                new = step(*[s[:, t] for s in sequences], *state)
                state = list(new) if isinstance(new, tuple) else [new]
                outputs.append(state[0])
            return op.stack(outputs, axis=1), tuple(state)
        # time-major before the projection: x is narrower than the gates, so it is the cheaper
        # one to transpose (and its gradient, in the backward pass)
        projected = self.project(op.transpose(x, (1, 0, *range(2, x.ndim))))
        state = [jnp.zeros((batch, self.hidden), projected.dtype) for _ in self.cell.inputs[1:]]
        time_major = [projected] if mask is None else [projected, op.transpose(mask, (1, 0))]
        stacked = op.scan(step, state, time_major)
        widths = [self.hidden * i for i in range(len(state) + 1)]
        final = tuple(stacked[-1, :, a:b] for a, b in itertools.pairwise(widths))
        return op.transpose(stacked[:, :, : self.hidden], (1, 0, 2)), final


class RecurrentLM(cg.Module):
    """Next-token logits (B, T, vocabulary) from token ids (B, T): embedding,
    recurrent layer, linear head."""

    def __init__(self, vocabulary, embed=64, hidden=128, cell="lstm", unroll=False, key=0):
        super().__init__(inputs=(cg.Variable("tokens"),))
        k1, k2, k3 = jax.random.split(init.key_of(key), 3)
        self.embed = Embedding(vocabulary, embed, key=k1)
        self.rnn = Recurrent(cell, embed, hidden, unroll=unroll, key=k2)
        self.head = Linear(hidden, vocabulary, key=k3)

    def call(self, tokens):
        outputs, _ = self.rnn(self.embed(tokens))
        return self.head(outputs)


class RecurrentClassifier(cg.Module):
    """Class logits from padded token ids (B, T): the recurrent layer's last hidden
    state over the non-padding tokens (id `pad`), then a linear head."""

    def __init__(self, vocabulary, num_classes, embed=64, hidden=128, cell="lstm", pad=0, key=0):
        super().__init__(inputs=(cg.Variable("tokens"),))
        k1, k2, k3 = jax.random.split(init.key_of(key), 3)
        self.embed = Embedding(vocabulary, embed, key=k1)
        self.rnn = Recurrent(cell, embed, hidden, key=k2)
        self.head = Linear(hidden, num_classes, key=k3)
        self.pad = pad

    def call(self, tokens):
        _, state = self.rnn(self.embed(tokens), cg.as_node(tokens).value != self.pad)
        return self.head(state[0])
