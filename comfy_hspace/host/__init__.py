"""The ComfyUI side of the library; the only modules of the pack that import ComfyUI.

- ``patch``: ComfyUI's patch protocol at the bottleneck (read and offset h on a clone);
- ``pixel_ddpm``: a diffusers pixel DDPM folder as a MODEL + pixel VAE;
- ``model_info``: h's shape, the UNet's fingerprint, the VAE scale, the down path's levels;
- ``latents``: latents, noise and sigmas as ComfyUI's samplers make them;
- ``autograd``: gradients through the model inside a prompt (which runs in inference mode);
- ``edited_sampling``: the Edited Sampler;
- ``recording``: the HSpace Hook's sampling and DDIM inversion, into a recorder;
- ``trajectory``: Jacobian Directions at points of a sample's own trajectory;
- ``discovery``: the Discovery Trainer through ComfyUI's denoiser.
- ``memory``: memory a run will ask for, estimated before sampling, against what is free.
"""
