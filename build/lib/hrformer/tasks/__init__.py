"""Tasks: loss, decoding, metric wiring and pictures for each task; the LightningModule delegates to them."""
