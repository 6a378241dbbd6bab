"""Every built-in operator's forward and hand-written backward, one test file per
family in zkynet/framework/ops/, against JAX (jax.vjp, jax.jacrev) and finite
differences, on random shapes with broadcasting.

Random examples find what nobody thought of; they cannot be relied on to find a
given mistake. So each property test also runs fixed cases (@example, and the
targeted tests beside it) chosen to break plausible wrong rules deterministically:
permutations that are not their own inverse (3-cycles) on shapes whose sides all
differ and on square ones, every binary operator broadcasting each way (size-1
axes stretched on both sides, missing leading axes, scalars), reductions over
interior axes with and without keepdims."""
