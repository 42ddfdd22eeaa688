"""Test and drill support: harnesses, load generation, fault drills. Never installed in production."""
