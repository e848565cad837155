"""Figures from products: ``compsep`` (kabalan2025), ``npe`` (duivenvoorden2025)."""
