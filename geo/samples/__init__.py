"""Sample data: the synthetic city and the OpenStreetMap demo district."""
