"""Database layer: typed models, engine set-up and migrations, queries and upserts, the run lock."""
