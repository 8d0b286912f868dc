"""Helpers that dispynode, dispyscheduler and the client share: safe file paths and sizes,
configuration files, the stdin menu and serve-until-stopped sequence."""
