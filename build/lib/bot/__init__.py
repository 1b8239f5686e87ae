"""Siyu: a self-hosted private-domain customer bot for WeChat."""
