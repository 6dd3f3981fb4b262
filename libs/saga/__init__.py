"""Sagas: a definition (steps, compensations, deadlines), a pure engine, their store and runtime."""
