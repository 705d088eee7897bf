"""ndmha: a reproducible workflow for Nested Deformable Multi-head Attention facial inpainting."""

__version__ = "0.1.0"
