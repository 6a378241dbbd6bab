"""The train benchmark measures what it says: zkynet and the plain-JAX reference are
the same model at CPU and GPU sizes (measure refuses a different first loss)."""

import dataclasses

import pytest

from experiments.bench import train


def test_a_row_has_times_ratios_throughput_and_flops():
    row = train.measure("mlp", train.CASES["mlp"], 1, 2, 2, torch_python=None)
    assert row["zkynet_step_ms"] > 0 and row["jax_step_ms"] > 0 and row["torch_step_ms"] is None
    assert row["unit"] == "samples/s" and row["throughput"] > 0
    assert row["flops_per_step"] > 2 * 256 * (64 * 256 + 256 * 256 + 256 * 10)  # at least the forward matmuls


SLOW = pytest.mark.slow


@pytest.mark.parametrize("name", ["mlp", *(pytest.param(n, marks=SLOW) for n in ("cnn", "lstm", "transformer"))])
def test_in_bf16_too_zkynet_and_jax_are_the_same_model(name):
    """--precision bf16: both cast weights and inputs to bfloat16 and logits back to float32
    (measure refuses a first loss more than 2% apart), at a small batch."""
    row = train.measure(
        name, dataclasses.replace(train.CASES[name], batch=2), 1, 1, 1, torch_python=None, precision="bf16"
    )
    assert row["zkynet_step_ms"] > 0 and row["flops_per_step"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bf16"])
@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_gpu_sizes_are_the_same_model_in_zkynet_and_jax(name, precision):
    case = train.GPU_CASES[name]  # GPU widths and depth; one short sequence, so that it fits a CPU test
    small = dataclasses.replace(case, batch=1, data=train._tokens(8, case.build().head.param("W").shape[1]))
    row = train.measure(name, small, 1, 1, 1, torch_python=None, precision=precision)
    assert row["unit"] == "tokens/s"
