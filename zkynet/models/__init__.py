"""Models built only from zkynet modules and operators."""
