"""Data parallelism across the devices of one machine: each batch is split along
its first axis over the devices, parameters and optimizer state are replicated,
and jax.jit (GSPMD) turns the gradient sums into an all-reduce. The training code
stays the same; only where the arrays live changes."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


class DataParallel:
    """Shardings over the first `devices` local devices (0: all of them)."""

    def __init__(self, devices=0):
        available = jax.local_devices()
        count = len(available) if devices == 0 else devices
        if not 1 <= count <= len(available):
            raise ValueError(
                f"asked for {devices} devices; this machine has {len(available)} "
                f"({available[0].platform}); on a CPU, XLA_FLAGS="
                f"--xla_force_host_platform_device_count=N makes N"
            )
        self.mesh = Mesh(np.array(available[:count]), ("data",))
        self.split = NamedSharding(self.mesh, PartitionSpec("data"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    @property
    def size(self):
        return self.mesh.size

    def batch(self, arrays):
        """Arrays split along axis 0 over the devices (copied whole to each device when
        their length does not divide evenly, e.g. a last, smaller batch)."""
        return tuple(jax.device_put(a, self.split if len(a) % self.size == 0 else self.replicated) for a in arrays)

    def replicate(self, tree):
        return jax.device_put(tree, self.replicated)
