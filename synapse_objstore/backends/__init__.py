"""Backends: one small module each, registered through the `register_backends` hook."""
