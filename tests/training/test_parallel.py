"""Data-parallel training over the devices of one machine (on the CPU, XLA makes
two host devices when asked before JAX starts, hence the subprocess)."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from zkynet.training import Trainer
    from zkynet import losses, optim
    from zkynet.data import load_digits
    from zkynet.framework.parallel import DataParallel
    from zkynet.models.fcn import MLP

    assert jax.device_count() == 2, jax.devices()
    data = load_digits()
    finals = {}
    for devices in (1, 2):
        model = MLP([64, 32, 10], dropout=0.1, key=0)
        trainer = Trainer(model, losses.softmax_cross_entropy, optim.Adam(1e-2), data, epochs=3, batch_size=64,
                          metrics=losses.classification_metrics, devices=devices)
        history = trainer.fit()
        finals[devices] = ({n: np.asarray(p.value) for n, p in model.named_parameters().items()}, history[-1])
        if devices == 2:
            x, y = next(trainer.batches.epoch(0))
            assert len(x.sharding.device_set) == 2 and x.addressable_shards[0].data.shape == (32, 64)
            assert all(len(p.value.sharding.device_set) == 2 for p in model.named_parameters().values())
    for name, value in finals[1][0].items():
        np.testing.assert_allclose(finals[2][0][name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    assert abs(finals[1][1]["val_accuracy"] - finals[2][1]["val_accuracy"]) < 0.01
    try:
        DataParallel(3)
    except ValueError as e:
        assert "asked for 3 devices; this machine has 2" in str(e)
    else:
        raise AssertionError("3 devices accepted")
    print("data parallel ok")
""")


@pytest.mark.slow
def test_training_split_over_two_devices_matches_one():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert result.returncode == 0 and "data parallel ok" in result.stdout, result.stderr
