"""Composition: the stage graph, a run's plan and execution, and the Ray mapping (life cycle, graph, stats)."""
