"""Data preparation (demo data, conversion, masks, overlay, split) and the training dataset."""
