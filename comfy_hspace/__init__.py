"""comfy-hspace library: h-space directions as torch functions, ComfyUI only in ``host/``.

Algorithms (no ComfyUI):
- ``directions``: the HSPACE_DIRECTIONS value, its file format and operations (select, scale, …);
- ``files``: the one safetensors writer and reader (written whole, never unpickled);
- ``settings``: ``SamplerSettings`` (what KSampler's widgets say) and ``EditSettings`` (how an edit applies);
- ``recorder``: what the HSpace Hook records of h (every h, or running statistics per timestep);
- ``pca``: streaming PCA and PCA directions (paper 000 §IV-A);
- ``jacobian``: power iteration on JᵀJ, the Jacobian maps at a trajectory point, masks (000 §IV-B);
- ``attribute``: mean-difference directions and disentangling (000 §V);
- ``editing``: the edit at h and its per-call keys; Asyrp's asymmetric sampler in k-diffusion's signature;
- ``inversion``: deterministic DDIM inversion sampler;
- ``discovery``: shift block, reconstructor, discriminator, checkpointed chain training (paper 001);
- ``avi``: channel-wise SVD merge, Φ and singular-value edits (paper 003);
- ``faces``, ``classifier``: the embedded domain's generator and attribute classifier;
- ``grid``: labelled image grids.

The ComfyUI side, ``host/``: see ``host/__init__.py``.
"""
