"""IGGT: instance-grounded geometry transformer -- reconstruction, consistent instances, grounding.

Importing the package is cheap; the heavy parts live in submodules (`iggt.model`,
`iggt.reconstruct`, `iggt.instances`, ...).
"""

__version__ = "0.1.0"
