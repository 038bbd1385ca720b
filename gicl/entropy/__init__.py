"""Entropy coding: fixed-length packing, static tables, range coding via constriction."""
