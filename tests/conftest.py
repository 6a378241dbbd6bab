"""Suite-wide settings."""


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end tests first: with one worker per core (pytest-xdist), the
    long ones then run side by side instead of being the last thing left."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
