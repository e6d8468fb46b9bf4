"""The gateway's routes, one controller per domain. `gateway.app.API_CONTROLLERS` lists them."""
