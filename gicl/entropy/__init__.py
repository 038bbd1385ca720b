"""Entropy coding: fixed-length packing, static tables, range coding via constriction."""

MAX_RANS_SYMBOL = 1 << 20
"""Largest |symbol| (a residual from the table's centre) a file may hold in a section coded with
CompressAI's rANS. It codes a value outside its table as 4-bit bypass chunks, one loop step
each, so a corrupted section that decodes to values near 2³¹ would make a decoder's
re-encode check run for minutes; real latents stay orders of magnitude below this bound (the
encoders refuse to write beyond it)."""
