"""The REST API, a module per resource, each adding its handlers to the aiohttp app."""
