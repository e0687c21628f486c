"""Running model-written code: make it executable (program), run it isolated (sandbox), trace it (tracer)."""
