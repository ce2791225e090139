"""`wbc serve`: HTTP API and web page."""
