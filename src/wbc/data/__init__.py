"""Reading, checking, exploring and splitting folder-per-class image sets."""
