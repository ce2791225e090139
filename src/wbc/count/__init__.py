"""Whole smear fields: find every cell (learned CenterNet or classic detector), classify each WBC, count."""
