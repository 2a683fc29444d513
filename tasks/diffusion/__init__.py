"""Diffusion stage: a DDPM/DDIM UNet that refines (SDEdit) and super-resolves face images."""
