"""The specialist: nnU-Net v2 with per-case knowledge of which organs are labeled."""
