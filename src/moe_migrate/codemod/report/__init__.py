"""Renderers of a Plan: pure functions from values to text or bytes; they never print."""
