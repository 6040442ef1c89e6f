"""Disaster recovery built from the data layer: runbooks, backups, drills, failover and failback, evidence."""
