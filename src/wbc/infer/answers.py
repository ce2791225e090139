"""The labels a classifier's answer can carry besides its classes: plain constants, so the review station
and the differential read them without loading a network."""

NO_WHITE_CELL = "NO_WHITE_CELL"  # the label of an image the no-white-cell rule turns away
UNIDENTIFIED = "UNIDENTIFIED"  # a cell far from every known type: counted apart, never folded into a type
