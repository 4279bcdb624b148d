"""comfy-hspace library: h-space directions as torch functions; comfy_host.py is the ComfyUI side."""
