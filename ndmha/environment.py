"""What a process hands the processes it starts through the environment (torch-free, so that a
job that builds no network imports no torch to set it)."""

#: the deformable-conv backend of a process and its children (``ndmha.deform_backend``): set once
#: where a process starts (:func:`ndmha.models.layers.set_deform_backend`, or the workflow's
#: script runner), read by every deformable conv left at ``auto``
DEFORM_BACKEND_ENV = "NDMHA_DEFORM_BACKEND"
