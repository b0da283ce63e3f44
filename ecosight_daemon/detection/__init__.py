"""Long recordings: streamed in blocks, scored per window, merged into events with clock times,
written in the formats field tools open."""
