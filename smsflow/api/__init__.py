"""The REST API: one module per resource, each adding its handlers to the aiohttp app."""
