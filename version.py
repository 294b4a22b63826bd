"""The version of hlbot, in one place.

Owns: `__version__`, read by `--version`, the start-up banner and `--check-config`.
Must not: import anything (a release bumps this one line).
"""
__version__ = "0.9.0"
