"""Evaluation: image I/O, real compress → bytes → decompress round trips, metrics, BD-rate,
RD plots. The CLI commands compress / decompress / export / eval / bdrate are thin over it."""
