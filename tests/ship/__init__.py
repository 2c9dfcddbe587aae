"""The shipping tests: the image recipes run without Docker (packaging, broker image)."""
