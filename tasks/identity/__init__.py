"""Identity stage: a face for the rig from the production generators (a new person from a seed,
or a photo passed through the diffusion refiner)."""
