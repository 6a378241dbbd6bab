"""Convolutional networks on NCHW images: Conv2d, pooling, a LeNet-style CNN."""

import jax
import jax.numpy as jnp

from zkynet import init
from zkynet.framework import cg, op
from zkynet.models.fcn import Linear
from zkynet.models.layers import Activation, Dropout, Flatten, Sequential


class Conv2d(cg.Module):
    """Cross-correlation with `out_channels` kernels of `kernel_size` plus a bias per
    channel. Kernels are (out, in, kh, kw), He-normal by default."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, init_fn="he_normal", key=0):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        kernel = init.get(init_fn)(init.key_of(key), (out_channels, in_channels, kh, kw))
        super().__init__(
            inputs=(cg.Variable("x"),),
            params=(cg.Parameter("W", kernel), cg.Parameter("b", jnp.zeros((out_channels, 1, 1)))),
        )
        self.stride, self.padding = stride, padding

    def call(self, x):
        return op.conv2d(x, self.param("W"), self.stride, self.padding) + self.param("b")


class MaxPool2d(cg.Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__(inputs=(cg.Variable("x"),))
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def call(self, x):
        return op.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(MaxPool2d):
    def call(self, x):
        return op.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class LeNet(Sequential):
    """LeNet-style: [conv 3x3 ('same') -> ReLU -> 2x2 max-pool] per entry of
    `channels`, then fully connected `hidden` layers and the class logits."""

    def __init__(
        self,
        input_shape=(1, 28, 28),
        num_classes=10,
        channels=(16, 32),
        hidden=(128,),
        kernel_size=3,
        dropout=0.0,
        key=0,
    ):
        keys = iter(jax.random.split(init.key_of(key), len(channels) + len(hidden) + 1))
        in_channels, height, width = input_shape
        layers = []
        for out_channels in channels:
            layers += [
                Conv2d(in_channels, out_channels, kernel_size, padding="same", key=next(keys)),
                Activation("relu"),
                MaxPool2d(2),
            ]
            in_channels, height, width = out_channels, height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(f"{len(channels)} pooling layers shrink {input_shape} to nothing")
        layers.append(Flatten())
        features = in_channels * height * width
        for size in hidden:
            layers += [Linear(features, size, init_fn="he_normal", key=next(keys)), Activation("relu")]
            if dropout:
                layers.append(Dropout(dropout))
            features = size
        layers.append(Linear(features, num_classes, key=next(keys)))
        super().__init__(layers)
