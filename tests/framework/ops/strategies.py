"""What the operator tests draw: hypothesis settings and shapes shared by the families."""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

# Every new shape costs XLA compilations of each eager primitive (~30 ms each), so
# shapes stay small: sides up to 3 and 3-4 dims still cover every broadcasting case.
examples = settings(max_examples=8, deadline=None)
seeds = st.integers(0, 2**32 - 1)
shapes = array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)
