"""The ``dispy`` command: ``dispy run`` (4.15's dispy_cmd) and ``dispy status``."""
