"""The browser console (控制台): sign-in, and a view for each role, served by the API app.

Pages are small HTML shells (``web/templates``) with every Chinese text from one catalogue
(``web/messages.py``); their scripts (``web/static``) talk to the same HTTP API as any other
system, signed in with the session cookie (``api.security``). JS/CSS libraries (Leaflet,
markercluster, ECharts, Swagger UI, Redoc) come from npm at set-up (``maps.assets``).
"""
