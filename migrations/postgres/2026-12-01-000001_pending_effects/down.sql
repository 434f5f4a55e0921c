DROP TABLE pending_effects;
