"""Photo → finished asset: the Triton client, the quality presets and the pipeline core."""
