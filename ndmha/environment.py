"""What a process hands the processes it starts through the environment (torch-free, so that a
job that builds no network imports no torch to set it)."""

#: the deformable convs' backend of a process and its children (the config's, resolved by
#: :mod:`ndmha.study`): set once where a process starts (the workflow when it reads its config,
#: the command line, the preflight, the GPU study: :func:`ndmha.models.layers.set_backend`);
#: read by every deformable conv left at ``auto``
DEFORM_BACKEND_ENV = "NDMHA_DEFORM_BACKEND"
