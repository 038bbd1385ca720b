"""Lightning callbacks (imported as gicl.callbacks)."""
