"""Face analytics: detection, quality gates, alignment, embedding, tracking, watchlists."""
