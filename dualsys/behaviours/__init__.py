"""Learned behaviours: scripted expert, demonstration dataset, training, offline evaluation."""
