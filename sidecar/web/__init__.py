"""The aiohttp side: the app factory, the server and its listeners, the catch-all resource."""
