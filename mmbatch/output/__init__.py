"""The worker's side of the output: where every file lives (layout), the write stage, the typed records."""
