"""Quality checks that need no downloaded weights: MediaPipe face rate, a Fréchet distance between
landmark shapes, the promotion gates trained models must pass, and the face check of a render."""
