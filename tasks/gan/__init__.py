"""GAN stage: a StyleGAN2-style generator that draws new identities."""
