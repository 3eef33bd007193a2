"""One backend contract per stage, the data shapes they exchange, and their implementations."""
