"""Running zkynet: the experiment runner, training loop, tracking and benchmarks."""
