"""Figures from products: ``compsep`` (kabalan2025), ``npe`` (duivenvoorden2025),
``compare`` (both methods on the same skies)."""
