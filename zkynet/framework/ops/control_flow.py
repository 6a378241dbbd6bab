"""Control flow under jit: op.cond, op.fori_loop, op.while_loop (placeholder)."""

__all__: list[str] = []
