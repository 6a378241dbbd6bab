"""The Hessian-vector product benchmark measures what it says: zkynet.hvp, the module
route and the plain-JAX product agree (measure refuses otherwise) and are timed."""

from experiments.bench import higher_order


def test_rows_for_each_contender_with_times_ratios_and_jaxpr_sizes():
    rows = {row["contender"]: row for row in higher_order.measure(batch=8, rounds=1, steps=1)}
    assert set(rows) == {"zkynet.hvp", "module", "jax"} and rows["jax"]["ratio"] == 1.0
    assert all(row["ms"] > 0 and row["compile_s"] > 0 and row["jaxpr_equations"] > 0 for row in rows.values())
