"""Quality metrics for generated faces that need no downloaded weights: MediaPipe face rate and a
Fréchet distance between landmark shapes."""
