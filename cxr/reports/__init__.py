"""Report text as a lower layer: composition and section tags, MIMIC sectioning, sentences, variants, errors."""
