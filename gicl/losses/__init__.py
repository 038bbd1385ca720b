"""Training losses: reconstruction, perceptual, adversarial (+ adaptive weight), rate."""
