"""Backbones, offline ImageNet weights, the classifier and its file format."""
